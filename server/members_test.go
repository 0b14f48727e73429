package server_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	"github.com/discoverd/discoverd/server"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// In-process (for the race detector): a node joins with -join as a voter,
// leaves with -leave-on-stop, and a read replica joins as a non-voter.
func TestMembers_JoinLeaveInProcess(t *testing.T) {
	c := tc.New(t, tc.Options{})
	ctx := tc.Context(t, 60*time.Second)
	cl := c.Client()
	var via []string
	for _, n := range c.Nodes {
		via = append(via, n.Addr)
	}
	start := func(id string, nonvoter bool) *server.Server {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg := c.Config(0)
		cfg.Raft.ID, cfg.Raft.Addr, cfg.Raft.DataDir, cfg.Raft.Peers = id, ln.Addr().String(), filepath.Join(t.TempDir(), id), nil
		cfg.Listener, cfg.Join, cfg.JoinNonVoter, cfg.LeaveOnStop = ln, via, nonvoter, true
		cfg.Logger = cfg.Logger.With("node", id)
		srv, err := server.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	waitMembers := func(want string) {
		t.Helper()
		var got string
		tc.WaitFor(t, 20*time.Second, "members "+want, func() bool {
			ms, err := cl.Members(ctx)
			if err != nil {
				got = err.Error()
				return false
			}
			got = ""
			for _, m := range ms.Members {
				got += fmt.Sprintf("%s:%v,", m.ID, m.Voter)
			}
			return got == want
		})
	}
	n4 := start("n4", false)
	waitMembers("n1:true,n2:true,n3:true,n4:true,")
	r1 := start("r1", true)
	waitMembers("n1:true,n2:true,n3:true,n4:true,r1:false,")
	if _, err := cl.SetMeta(ctx, "db", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	rc, err := client.NewWithConfig(client.Config{Servers: []string{r1.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// A consistent read on the replica: the leader's read index, then the
	// replica's own state once it has applied it.
	if m, err := rc.GetMeta(ctx, "db", client.MetaOptions{Consistent: true}); err != nil || string(m.Data) != "v" {
		t.Fatalf("the replica reads %q, %v", m.Data, err)
	}
	for _, s := range []*server.Server{n4, r1} {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := s.Shutdown(sctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	waitMembers("n1:true,n2:true,n3:true,")
}
