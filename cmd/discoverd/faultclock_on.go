//go:build faultclock

package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/discoverd/discoverd/ttl"
)

// faultClockFlag adds -fault-clock to builds with the faultclock tag.
func faultClockFlag(fs *flag.FlagSet) func(log *slog.Logger, stop <-chan struct{}) ttl.Clock {
	path := fs.String("fault-clock", "", "fault-injection builds: file with speed=F for the TTL clock (polled every 100 ms)")
	return func(log *slog.Logger, stop <-chan struct{}) ttl.Clock {
		if *path == "" {
			return nil
		}
		return newFaultClock(*path, log.With("component", "faultclock"), stop)
	}
}

// The fault clock is a TTL clock the fault suite can speed up or slow down
// while discoverd runs, to check how expiry behaves when the leader's clock
// runs fast. The rate is read from a file ("speed=2.5"), polled every
// 100 ms. Only builds with the faultclock tag have it, and only with
// -fault-clock FILE.

// faultClock runs at a rate set in a file. Its times carry the monotonic
// reading of the moment it was created, so they compare like time.Now's.
type faultClock struct {
	path string
	log  *slog.Logger

	mu         sync.Mutex
	anchorReal time.Time
	anchorFake time.Time
	speed      float64
	raw        string
}

var _ ttl.Clock = (*faultClock)(nil)

// newFaultClock starts a clock at real speed that follows path until stop is closed.
func newFaultClock(path string, log *slog.Logger, stop <-chan struct{}) *faultClock {
	now := time.Now()
	c := &faultClock{path: path, log: log, anchorReal: now, anchorFake: now, speed: 1}
	c.poll()
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				c.poll()
			case <-stop:
				return
			}
		}
	}()
	return c
}

// parseFaultClock reads "speed=F" (F > 0); an empty file is speed 1.
func parseFaultClock(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 1, nil
	}
	v, ok := strings.CutPrefix(s, "speed=")
	if !ok {
		return 0, fmt.Errorf("fault clock %q: want speed=F", s)
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 || f > 1000 {
		return 0, fmt.Errorf("fault clock speed %q: want a number in (0, 1000]", v)
	}
	return f, nil
}

func (c *faultClock) poll() {
	b, err := os.ReadFile(c.path)
	if err != nil && !os.IsNotExist(err) {
		return
	}
	raw := string(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	if raw == c.raw {
		return
	}
	c.raw = raw
	speed, err := parseFaultClock(raw)
	if err != nil {
		c.log.Warn("fault clock file ignored", "err", err)
		return
	}
	now := time.Now()
	c.anchorFake = c.nowLocked(now)
	c.anchorReal = now
	c.speed = speed
	c.log.Warn("fault clock speed changed", "speed", speed)
}

func (c *faultClock) nowLocked(real time.Time) time.Time {
	return c.anchorFake.Add(time.Duration(float64(real.Sub(c.anchorReal)) * c.speed))
}

// Now implements ttl.Clock.
func (c *faultClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nowLocked(time.Now())
}

// TimerAt implements ttl.Clock: it fires when this clock reaches t at the
// current speed (a later speed change does not move a running timer).
func (c *faultClock) TimerAt(t time.Time) ttl.Timer {
	c.mu.Lock()
	d := t.Sub(c.nowLocked(time.Now()))
	speed := c.speed
	c.mu.Unlock()
	return ttl.SystemClock{}.TimerAt(time.Now().Add(time.Duration(float64(d) / speed)))
}
