package raftstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
)

// Forwarder sends a request to another node (implemented by rpcconn.Pool).
type Forwarder interface {
	Call(ctx context.Context, addr, method string, forwarded bool, req, resp any) error
}

// onLeader serves a request that only the leader may serve (a write, a
// heartbeat, a consistent read): if this node leads it runs local;
// otherwise it forwards req to the leader as method and decodes the
// leader's answer into resp, and reports remote true.
//
// A forwarded request is marked so, and a node never forwards it again: a
// node that receives one and does not lead fails it with codes.ErrNotLeader
// (what names the request in the message). A not_leader error before
// anything was done — local losing leadership before proposing, or the
// leader having moved before the forwarded request arrived — is retried
// with the new leader while ctx lasts.
func (s *Store) onLeader(ctx context.Context, what, method string, req, resp any, local func() error) (remote bool, err error) {
	for {
		if s.node.IsLeader() {
			err := local()
			if errors.Is(err, codes.ErrNotLeader) && !backend.IsForwarded(ctx) && ctx.Err() == nil {
				continue // lost leadership before acting: find the new leader
			}
			return false, err
		}
		if backend.IsForwarded(ctx) {
			return false, fmt.Errorf("%s forwarded to %s, which is not the leader: %w", what, s.node.ID(), codes.ErrNotLeader)
		}
		addr, err := s.leaderAddr(ctx)
		if err != nil {
			return false, err
		}
		if addr == "" {
			continue // this node became the leader meanwhile
		}
		err = s.fwd.Call(ctx, addr, method, true, req, resp)
		if errors.Is(err, codes.ErrNotLeader) && ctx.Err() == nil {
			// Leadership moved before the request arrived; nothing was
			// done. Give the election a moment.
			select {
			case <-time.After(50 * time.Millisecond):
				continue
			case <-ctx.Done():
				return false, codes.ErrNoLeader
			}
		}
		return true, err
	}
}

// leaderAddr waits (up to LeaderWait) for a known leader other than this node
// and returns the address to dial it at. It returns "" when this node is the leader.
func (s *Store) leaderAddr(ctx context.Context) (string, error) {
	deadline := time.Now().Add(s.cfg.LeaderWait)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.node.IsLeader() {
			return "", nil
		}
		if id, addr := s.node.Leader(); addr != "" {
			return s.node.DialAddr(id, addr), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no leader elected after %v: %w", s.cfg.LeaderWait, codes.ErrNoLeader)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for a leader: %w", codes.ErrNoLeader)
		}
	}
}
