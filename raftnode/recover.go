package raftnode

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
)

// Recover rewrites the Raft configuration of a stopped node's data dir to
// peers (which must name cfg.ID), for a cluster that lost its quorum for
// good: every surviving node is recovered with the same peers, then
// started; they elect a leader among themselves. It replays the log into m,
// writes a snapshot holding m's state and the new configuration, and
// drops the log. Entries that only the lost nodes held are gone, and an
// entry this node holds that was never committed becomes committed: the
// cluster is only as complete as the most complete survivor (recover that
// one, start it alone, and let the others join it when in doubt).
func Recover(cfg Config, m Machine, peers []Peer) error {
	if len(peers) == 0 {
		return errors.New("recover needs the surviving voters (-peers id=host:port,...)")
	}
	self := false
	var conf raft.Configuration
	for _, p := range peers {
		self = self || p.ID == cfg.ID
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Voter})
	}
	if !self {
		return fmt.Errorf("-peers does not name this node (%q): list every surviving voter, this one included", cfg.ID)
	}
	n, err := openState(cfg)
	if err != nil {
		return err
	}
	defer n.closeStores()
	if !n.hasState {
		return fmt.Errorf("data dir %s holds no Raft state: nothing to recover (a new node joins with -join)", cfg.DataDir)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = n.hlog
	_, trans := raft.NewInmemTransport(raft.ServerAddress(cfg.Addr))
	defer trans.Close()
	if err := guard(func() error {
		return raft.RecoverCluster(rc, m, n.logs, n.stable, n.snaps, trans, conf)
	}); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	return nil
}
