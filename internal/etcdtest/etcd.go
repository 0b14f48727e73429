// Package etcdtest runs real etcd servers inside a test process
// (go.etcd.io/etcd/server/v3/embed) on loopback, with temporary data dirs
// and tight timings, for the etcd backend's tests: one member, or a cluster
// whose members can be stopped and started again on the same ports and data.
package etcdtest

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/discoverd/discoverd/internal/testport"
)

// Cluster is a running etcd cluster.
type Cluster struct {
	t       testing.TB
	members []*member
	mu      sync.Mutex // guards each member's e
}

type member struct {
	name         string
	dir          string
	client, peer url.URL
	e            *embed.Etcd // nil while stopped
}

// Etcd is a single-member cluster; Endpoint is its client URL.
type Etcd struct {
	*Cluster
	Endpoint string
}

// Start starts a single-member etcd, stopped at cleanup.
func Start(t testing.TB) *Etcd {
	t.Helper()
	c := StartCluster(t, 1)
	return &Etcd{Cluster: c, Endpoint: c.Endpoints()[0]}
}

// StartCluster starts an n-member etcd cluster, stopped at cleanup. Its
// timings (50 ms ticks, 500 ms elections) keep etcd's minimum lease TTL
// under one second.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var initial []string
	// Members restart on their ports: ports from below the ephemeral range,
	// which no client connection can take while a member is stopped.
	ports, err := testport.Pick(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m := &member{name: fmt.Sprintf("etcd%d", i), dir: t.TempDir(),
			client: url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])},
			peer:   url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peer.String())
	}
	t.Cleanup(func() {
		for i := range c.members {
			c.Stop(i)
		}
	})
	errs := make(chan error, n)
	for i := range c.members {
		go func() { errs <- c.start(i, strings.Join(initial, ","), "new") }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *Cluster) start(i int, initial, state string) error {
	m := c.members[i]
	cfg := embed.NewConfig()
	cfg.Dir, cfg.Name = m.dir, m.name
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{m.client}, []url.URL{m.client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{m.peer}, []url.URL{m.peer}
	cfg.InitialCluster, cfg.ClusterState = initial, state
	cfg.TickMs, cfg.ElectionMs = 50, 500
	cfg.LogLevel = "fatal" // its shutdown logs errors about closed listeners
	cfg.ListenMetricsUrls = nil
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start %s: %w", m.name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return fmt.Errorf("%s not ready after 30s", m.name)
	}
	c.mu.Lock()
	m.e = e
	c.mu.Unlock()
	return nil
}

// Endpoints are the client URLs of every member.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.client.String())
	}
	return out
}

// Stop stops member i (no-op if stopped).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	e := c.members[i].e
	c.members[i].e = nil
	c.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts stopped members again on their ports and data, in
// parallel (a member of a cluster that lost quorum waits for the others).
func (c *Cluster) Restart(idx ...int) {
	c.t.Helper()
	var initial []string
	for _, m := range c.members {
		initial = append(initial, m.name+"="+m.peer.String())
	}
	errs := make(chan error, len(idx))
	for _, i := range idx {
		go func() { errs <- c.start(i, strings.Join(initial, ","), "existing") }()
	}
	for range idx {
		if err := <-errs; err != nil {
			c.t.Fatal(err)
		}
	}
}

// Leader returns the index of the member that leads, or -1.
func (c *Cluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, m := range c.members {
		if m.e != nil && m.e.Server.Leader() == m.e.Server.MemberID() {
			return i
		}
	}
	return -1
}

// Running reports whether member i runs.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].e != nil
}
