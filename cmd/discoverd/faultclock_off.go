//go:build !faultclock

package main

import (
	"flag"
	"log/slog"

	"github.com/discoverd/discoverd/ttl"
)

// faultClockFlag: normal builds have no fault clock.
func faultClockFlag(*flag.FlagSet) func(*slog.Logger, <-chan struct{}) ttl.Clock {
	return func(*slog.Logger, <-chan struct{}) ttl.Clock { return nil }
}
