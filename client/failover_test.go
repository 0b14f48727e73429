package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// When every server refuses connections (nothing listens), a call fails
// after about one retry round, not at its deadline, and says so once:
// "no discoverd server reachable at A, B, C (connection refused)".
func TestClient_AllServersRefusedFailsFast(t *testing.T) {
	servers := []string{closedAddr(t), closedAddr(t), closedAddr(t)}
	cl := newClient(t, client.Config{Servers: servers, RequestTimeout: 15 * time.Second, Host: "10.0.0.1"})
	want := "no discoverd server reachable at " + strings.Join(servers, ", ") + " (connection refused)"
	ctx := tc.Context(t, 15*time.Second)
	tests := []struct {
		name string
		call func() error
	}{
		{"Register", func() error { return cl.Register("cache", 9876, nil) }},
		{"Unregister", func() error { return cl.Unregister("cache", 9876) }},
		{"Instances", func() error {
			_, _, err := cl.Instances(ctx, "cache", client.ListOptions{})
			return err
		}},
		{"Status", func() error {
			_, err := cl.Status(ctx)
			return err
		}},
		{"Watch", func() error {
			w, err := cl.Watch(ctx, "cache", 0)
			if w != nil {
				w.Close()
			}
			return err
		}},
		{"Services", func() error {
			s, err := cl.Services("cache")
			if s != nil {
				s.Close()
			}
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			err := tt.call()
			took := time.Since(start)
			if !errors.Is(err, client.ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
			if took > 3*time.Second {
				t.Fatalf("failed after %v, want within a retry round (under 3 s) of a 15 s timeout", took)
			}
			msg := err.Error()
			if !strings.Contains(msg, want) || strings.Count(msg, "reachable") != 1 || strings.Contains(msg, "gave up") {
				t.Fatalf("err = %q, want one %q", msg, want)
			}
			t.Logf("failed after %v: %v", took.Round(time.Millisecond), err)
		})
	}
}

// Closing a set — itself or through its client — closes every subscribed
// channel, so `for u := range updates` ends.
func TestClient_SetCloseEndsSubscriberRanges(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	cl := newClient(t, client.Config{Servers: nodeAddrs(c.Nodes...)})
	register(t, cl, "ranged", "10.0.0.1:80", nil, time.Hour)

	// rangeUntilClosed ranges over ch in a goroutine; the returned channel
	// is closed when the range ends.
	rangeUntilClosed := func(ch <-chan *client.ServiceUpdate) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range ch {
			}
		}()
		return done
	}
	ended := func(what string, done <-chan struct{}) {
		t.Helper()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the range over the updates did not end", what)
		}
	}

	set := services(t, cl, "ranged")
	a, b := make(chan *client.ServiceUpdate), make(chan *client.ServiceUpdate, 10)
	set.Subscribe(a)
	set.Subscribe(b)
	set.Subscribe(b) // twice: closed once
	doneA, doneB := rangeUntilClosed(a), rangeUntilClosed(b)
	register(t, cl, "ranged", "10.0.0.2:80", nil, time.Hour) // an update in flight
	set.Close()
	ended("ServiceSet.Close", doneA)
	ended("ServiceSet.Close", doneB)
	set.Close() // again: nothing to close twice

	other := newClient(t, client.Config{Servers: nodeAddrs(c.Nodes...)})
	s1, s2 := services(t, other, "ranged"), services(t, other, "elsewhere")
	u1, u2 := make(chan *client.ServiceUpdate, 1), make(chan *client.ServiceUpdate, 1)
	s1.Subscribe(u1)
	s2.Subscribe(u2)
	done1, done2 := rangeUntilClosed(u1), rangeUntilClosed(u2)
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	ended("Client.Close", done1)
	ended("Client.Close", done2)
	s1.Close() // after the client's Close: nothing to close twice
	if _, err := other.Status(context.Background()); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Status after Close: %v", err)
	}
}
