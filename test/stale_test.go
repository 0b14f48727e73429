package test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
)

// The Go client's ServiceSet against real server processes when the whole
// cluster stops and starts again.

// setAddrs returns the addresses a set holds, sorted.
func setAddrs(set *client.ServiceSet) []string {
	var out []string
	for s := range set.Online() {
		out = append(out, s.Addr)
	}
	slices.Sort(out)
	return out
}

// instanceAddrs returns the addresses of a `services -json` list, sorted.
func instanceAddrs(list []instance) []string {
	out := []string{}
	for _, in := range list {
		out = append(out, in.Addr)
	}
	slices.Sort(out)
	return out
}

// nextNotice reads updates until a notice arrives and returns it; an
// instance going away before it fails the test unless gone is allowed.
func nextNotice(t *testing.T, ch <-chan *client.ServiceUpdate, gone bool, timeout time.Duration) *client.ServiceUpdate {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case u, ok := <-ch:
			if !ok {
				t.Fatal("the set closed its subscriber's channel")
			}
			if u.Notice {
				return u
			}
			if !u.Online && !gone {
				t.Fatalf("update %+v: an instance reported gone while the cluster is down", u)
			}
		case <-deadline.C:
			t.Fatalf("no notice within %v", timeout)
		}
	}
}

// TestStale_ServiceSetAcrossWholeClusterRestart: a ServiceSet keeps its
// instances while all three server processes are stopped (SIGTERM), becomes
// stale and says so; once they are started again on their data it is
// fresh, and equal to what `discoverd services` lists — an instance
// registered after the restart included.
func TestStale_ServiceSetAcrossWholeClusterRestart(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	servers := strings.Split(c.servers(), ",")
	const name = "stale-web"

	writer, err := client.NewWithConfig(client.Config{Servers: servers, Host: "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = writer.Close() })
	registerAddr := func(addr string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := writer.RegisterAddr(ctx, name, addr, map[string]string{"id": addr}, time.Hour); err != nil {
			t.Fatalf("RegisterAddr(%s): %v", addr, err)
		}
	}
	addrs := []string{"10.0.30.1:80", "10.0.30.2:80", "10.0.30.3:80"}
	for _, a := range addrs {
		registerAddr(a)
	}

	reader, err := client.NewWithConfig(client.Config{Servers: servers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reader.Close() })
	set, err := reader.Services(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Close)
	ch := make(chan *client.ServiceUpdate, 256)
	set.Subscribe(ch)
	// The reader's node may not have applied the last registration yet
	// (default reads lag the leader): wait for it.
	poll(t, 10*time.Second, 20*time.Millisecond, "the set to hold the three instances, fresh", func() (bool, string) {
		got := setAddrs(set)
		return slices.Equal(got, addrs) && !set.Stale(), fmt.Sprintf("%v, stale %v", got, set.Stale())
	})

	for _, nd := range c.nodes {
		nd.p.signal(t, syscall.SIGTERM)
	}
	for _, nd := range c.nodes {
		nd.p.wait(t, 30*time.Second)
	}
	stopped := time.Now()
	poll(t, 30*time.Second, 50*time.Millisecond, "the set to be stale, keeping its instances", func() (bool, string) {
		got := setAddrs(set)
		if !slices.Equal(got, addrs) || set.Err() != nil {
			t.Fatalf("with the cluster down the set holds %v (Err %v), want %v", got, set.Err(), addrs)
		}
		return set.Stale(), fmt.Sprintf("Stale %v, LastContact %v", set.Stale(), set.LastContact())
	})
	if u := nextNotice(t, ch, false, 5*time.Second); !u.Stale || u.Addr != "" {
		t.Fatalf("notice %+v, want a stale one", u)
	}
	if lc := set.LastContact(); lc.After(stopped) {
		t.Fatalf("LastContact %v after the cluster stopped at %v", lc, stopped)
	}

	for _, nd := range c.nodes {
		c.startNode(nd)
	}
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	registerAddr("10.0.30.4:80")
	var live []string
	poll(t, 30*time.Second, 100*time.Millisecond, "the set to be fresh and equal to `services`", func() (bool, string) {
		list, err := h.services(c.servers(), name)
		if err != nil {
			return false, err.Error()
		}
		live = instanceAddrs(list)
		got := setAddrs(set)
		return !set.Stale() && len(live) == 4 && slices.Equal(got, live),
			fmt.Sprintf("set %v (Stale %v), services %v", got, set.Stale(), live)
	})
	if u := nextNotice(t, ch, true, 10*time.Second); u.Stale {
		t.Fatalf("notice %+v, want a fresh one", u)
	}
	if err := set.Err(); err != nil {
		t.Fatalf("Err() = %v", err)
	}
}
