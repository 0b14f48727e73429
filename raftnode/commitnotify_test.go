package raftnode_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend/raftstore"
	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/server"
	"github.com/discoverd/discoverd/server/servertest"
)

// followersApply registers one instance through the leader of a cluster
// whose CommitTimeout is 1.5 s and reports whether every follower has applied
// it within within.
func followersApply(t *testing.T, noCommitNotify bool, within time.Duration) bool {
	t.Helper()
	c := servertest.New(t, servertest.Options{Configure: func(i int, cfg *server.Config) {
		cfg.Raft.CommitTimeout = 1500 * time.Millisecond
		cfg.Raft.NoCommitNotify = noCommitNotify
	}})
	leader := c.WaitLeader()
	// Let the entries of the leader's start (its barrier) reach everyone,
	// so that the write below is the only thing in flight.
	last := leader.Srv.Node().Status().LastIndex
	servertest.WaitFor(t, 15*time.Second, "followers to apply the leader's start", func() bool {
		for _, f := range c.Followers() {
			if f.Srv.Node().Status().AppliedIndex < last {
				return false
			}
		}
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 3 { // a few isolated writes, each announced on its own
		if _, err := raftstore.NewProposer(leader.Srv.Node()).Apply(ctx, fsm.RegisterType, &fsm.RegisterCommand{
			Name: "web", Addr: fmt.Sprintf("10.0.0.%d:80", i+1), TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		index := leader.Srv.FSM().AppliedIndex()
		deadline := time.Now().Add(within)
		for {
			all := true
			for _, f := range c.Followers() {
				if f.Srv.FSM().AppliedIndex() < index {
					all = false
				}
			}
			if all {
				break
			}
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return true
}

// TestCommitNotify_FollowersApplyAnIsolatedWriteAtOnce: after a write with
// nothing behind it, followers learn it is committed from the leader's
// notice, not after CommitTimeout (1.5-3 s here) — and without the notice they
// do not (so the notice is what the first half measures).
func TestCommitNotify_FollowersApplyAnIsolatedWriteAtOnce(t *testing.T) {
	if !followersApply(t, false, 500*time.Millisecond) {
		t.Fatal("with commit notices: followers did not apply an isolated write within 500 ms (CommitTimeout is 1.5 s)")
	}
	if followersApply(t, true, 500*time.Millisecond) {
		t.Fatal("without commit notices followers applied within 500 ms: the test no longer measures the notice")
	}
}
