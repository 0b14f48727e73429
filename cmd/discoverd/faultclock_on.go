//go:build faultclock

package main

import (
	"flag"
	"log/slog"

	"github.com/discoverd/discoverd/internal/faultclock"
	"github.com/discoverd/discoverd/ttl"
)

// faultClockFlag adds -fault-clock to builds with the faultclock tag.
func faultClockFlag(fs *flag.FlagSet) func(log *slog.Logger, stop <-chan struct{}) ttl.Clock {
	path := fs.String("fault-clock", "", "fault-injection builds: file with speed=F for the TTL clock (polled every 100 ms)")
	return func(log *slog.Logger, stop <-chan struct{}) ttl.Clock {
		if *path == "" {
			return nil
		}
		return faultclock.New(*path, log.With("component", "faultclock"), stop)
	}
}
