package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestShutdown_BoundsAStopThatHangs(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	release := make(chan struct{})
	defer close(release)
	deadlines := make(chan time.Time, 1)
	start := time.Now()
	err := shutdown(func(ctx context.Context) error {
		d, _ := ctx.Deadline()
		deadlines <- d
		<-release // a stop stuck for good
		return nil
	}, 50*time.Millisecond, 100*time.Millisecond, log)
	if err == nil || !strings.Contains(err.Error(), "did not finish within 150ms") {
		t.Fatalf("err = %v, want a stop that did not finish within 150ms", err)
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Fatalf("gave up after %v, before timeout plus grace", took)
	}
	if d := <-deadlines; d.Before(start.Add(50*time.Millisecond)) || d.After(time.Now().Add(50*time.Millisecond)) {
		t.Fatalf("stop's context deadline %v after start, want the 50ms shutdown timeout", d.Sub(start))
	}
}

func TestShutdown_ReturnsWhatTheStopReturns(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := shutdown(func(context.Context) error { return nil }, time.Second, time.Second, log); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
	boom := errors.New("boom")
	if err := shutdown(func(context.Context) error { return boom }, time.Second, time.Second, log); !errors.Is(err, boom) {
		t.Fatalf("failed stop: %v, want it wrapped", err)
	}
}
