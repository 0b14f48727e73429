package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/discoverd/discoverd/internal/wire"
)

// The replicas workload (README.md, "Benchmarks"): watch fan-out with the
// watchers spread evenly over a 3-voter cluster, then over the same cluster
// with two read replicas (non-voters, `-join … -nonvoter`) added, at the
// same watcher counts. discoverd only: etcd's non-voting members (learners)
// serve Status and serializable reads only, no watches.

// replicaLayout is one of the two layouts measured.
type replicaLayout struct {
	workload string // the rows'
	label    string // what the report calls it
}

var (
	replicaVoters    = replicaLayout{"replicas-3v", "3 voters"}
	replicaNonVoters = replicaLayout{"replicas-3v+2nv", "3 voters + 2 non-voters"}
)

const (
	// replicaCount is how many read replicas join.
	replicaCount = 2
	// replicaWatchersPerConn: watchers share connections as the watch
	// workload's do (1000 over 10), far under a connection's 1024 streams
	// (rpc.Config.MaxStreams): 10 000 watchers take 34 connections a node
	// over 3 nodes, 20 over 5, against each node's -max-conns-per-ip of
	// 1024 and -max-conns of 4096.
	replicaWatchersPerConn = 100
)

func (b *bench) replicas(ctx context.Context, sys string, cl cluster) error {
	counts := []int{1000, 10_000}
	if b.quick {
		counts = []int{1000}
	}
	return b.replicasWith(ctx, sys, cl, counts, watchEvents)
}

// replicasWith measures each of counts with the watchers on the voters,
// adds the replicas, and measures each again with the watchers on every
// node. The writer writes to the leader in both layouts.
func (b *bench) replicasWith(ctx context.Context, sys string, cl cluster, counts []int, events int) error {
	dc, ok := cl.(*discoverdCluster)
	if !ok || dc.tls != nil {
		b.logf("[%s] replicas: measured for discoverd without TLS only", sys)
		return nil
	}
	measure := func(layout replicaLayout) error {
		nodes := make([]int, len(dc.addrs))
		for i := range nodes {
			nodes[i] = i
		}
		for _, nw := range counts {
			run := watchRun{workload: layout.workload, layout: layout.label, watchers: nw, events: events,
				spread: spreadEvenly(nw, nodes, replicaWatchersPerConn), writeToLeader: true}
			if err := b.watchOnce(ctx, sys, cl, run); err != nil {
				return err
			}
		}
		return nil
	}
	if err := measure(replicaVoters); err != nil {
		return err
	}

	start := time.Now()
	voters := strings.Join(dc.addrs, ",")
	var ids []string
	for i := range replicaCount {
		id := fmt.Sprintf("n%d", len(dc.ids)+1)
		if err := dc.addNode(id, "-join", voters, "-nonvoter"); err != nil {
			return fmt.Errorf("replica %d: %w", i+1, err)
		}
		ids = append(ids, id)
	}
	if err := dc.waitReplicas(ctx, ids); err != nil {
		return err
	}
	b.logf("[%s] replicas: %s joined as non-voters and caught up in %.1fs", sys, strings.Join(ids, ", "), time.Since(start).Seconds())
	return measure(replicaNonVoters)
}

// waitReplicas waits (at most 45 s, failing at once if a node exits) until
// the leader lists every one of ids as a caught-up non-voter (see
// replicasCaughtUp) and every node agrees on the leader.
func (c *discoverdCluster) waitReplicas(ctx context.Context, ids []string) error {
	return waitReady(ctx, "read replicas "+strings.Join(ids, ", "), c.ps, func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var resp wire.MembersResponse
		if err := c.admin.Call(cctx, c.addrs[0], wire.MethodMembers, false, &wire.Empty{}, &resp); err != nil {
			return fmt.Errorf("members: %w", err)
		}
		if err := replicasCaughtUp(resp, ids); err != nil {
			return err
		}
		return c.probe(ctx)
	})
}

// replicasCaughtUp says why the members are not yet what the second
// layout needs: each of ids a non-voter that follows, serves reads and has
// applied the leader's commit index. nil when they are.
func replicasCaughtUp(resp wire.MembersResponse, ids []string) error {
	for _, id := range ids {
		var m *wire.Member
		for i := range resp.Members {
			if resp.Members[i].ID == id {
				m = &resp.Members[i]
			}
		}
		switch {
		case m == nil:
			return fmt.Errorf("%s is not a member yet", id)
		case m.Voter:
			return fmt.Errorf("%s is a voter, want a non-voter", id)
		case m.Status.Error != "":
			return fmt.Errorf("%s does not answer: %s", id, m.Status.Error)
		case m.Status.State != "Follower":
			return fmt.Errorf("%s is in state %q, want Follower", id, m.Status.State)
		case !m.Status.Ready:
			return fmt.Errorf("%s does not serve reads yet (not ready)", id)
		case m.Lag > 0:
			return fmt.Errorf("%s lags the leader's commit index by %d entries", id, m.Lag)
		}
	}
	return nil
}
