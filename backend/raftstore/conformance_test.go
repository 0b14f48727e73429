package raftstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend/conformance"
	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/server"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// TestRaftStore_Conformance runs the DiscoveryBackend conformance suite
// against the built-in Raft store: an in-process 3-node cluster.
func TestRaftStore_Conformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) *conformance.Target {
		const history = 8
		c := tc.New(t, tc.Options{Configure: func(i int, cfg *server.Config) {
			cfg.FSM.HistoryPerService = history // so LoseHistory needs only a few writes
		}})
		var servers []string
		for _, n := range c.Nodes {
			servers = append(servers, n.Addr)
		}
		return &conformance.Target{
			Servers: servers,
			// The FSM keeps the last `history` events per service: push the
			// service's older events out of it.
			LoseHistory: func(t *testing.T, service string) {
				cl, err := client.New(servers...)
				if err != nil {
					t.Fatal(err)
				}
				defer cl.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				for i := range history + 1 {
					if err := cl.RegisterAddr(ctx, service, fmt.Sprintf("10.99.0.%d:1", i+1), nil, time.Hour); err != nil {
						t.Fatal(err)
					}
				}
				c.WaitApplied(cl.LastIndex())
			},
			TTL:          time.Second,
			RemovalBound: 3 * time.Second,
			// Every node snapshots, then all stop and start again: each
			// restores its snapshot (and the little log after it).
			SnapshotRestore: func(t *testing.T) {
				for _, n := range c.Nodes {
					if err := n.Srv.Node().Snapshot(); err != nil {
						t.Fatalf("snapshot %s: %v", n.ID, err)
					}
				}
				for i := range c.Nodes {
					c.Stop(i)
				}
				for i := range c.Nodes {
					c.Restart(i)
				}
				c.WaitLeader()
			},
		}
	})
}
