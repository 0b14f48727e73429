package raftstore

import (
	"context"
	"fmt"
	"time"

	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/raftnode"
	"github.com/discoverd/discoverd/ttl"
)

// The FSM is the state machine raftnode replicates.
var _ raftnode.Machine = (*fsm.FSM)(nil)

// The tracker proposes its expiries and suspect markers through a Proposer.
var (
	_ ttl.Proposer        = (*Proposer)(nil)
	_ ttl.SuspectProposer = (*Proposer)(nil)
)

// Proposer is the glue between the FSM's commands and the Raft node, which
// knows none of them: it encodes a command into a log entry, proposes it
// through the node and hands back the FSM's result. It implements
// ttl.Proposer, so the leader's TTL tracker proposes its expiries through
// it.
type Proposer struct {
	node *raftnode.Node
}

// NewProposer returns a proposer over node (opened; it may not be started yet).
func NewProposer(node *raftnode.Node) *Proposer { return &Proposer{node: node} }

// Apply proposes one command and waits until it is committed and applied
// here. Errors are raftnode's (codes.ErrNotLeader: not proposed;
// codes.ErrUnknownOutcome: proposed, fate unknown; see raftnode.Node.Apply),
// prefixed with the command's type. A business failure (codes.ErrNotFound)
// is the result's Err.
func (p *Proposer) Apply(ctx context.Context, t fsm.MessageType, cmd any) (*fsm.Result, error) {
	entry, err := fsm.Encode(t, cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", codes.ErrInternal, err)
	}
	resp, _, err := p.node.Apply(ctx, entry)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	res, ok := resp.(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected apply response %T: %w", t, resp, codes.ErrInternal)
	}
	return res, nil
}

// IsLeader implements ttl.Proposer.
func (p *Proposer) IsLeader() bool { return p.node.IsLeader() }

// ProposeExpire implements ttl.Proposer: it commits an expire command for
// the registration of (name, addr) at index, which removes the instance
// only if no newer registration replaced it.
func (p *Proposer) ProposeExpire(ctx context.Context, name, addr string, index uint64) (bool, error) {
	res, err := p.Apply(ctx, fsm.ExpireType, &fsm.ExpireCommand{Name: name, Addr: addr, Index: index, DecidedAt: time.Now().UnixNano()})
	if err != nil {
		return false, err
	}
	return res.Changed, res.Err
}

// ProposeSuspect implements ttl.SuspectProposer: it commits a suspect
// command, which sets the marker of the registration of (name, addr) at
// index only if no newer registration replaced it.
func (p *Proposer) ProposeSuspect(ctx context.Context, name, addr string, index uint64, suspect bool) (bool, error) {
	res, err := p.Apply(ctx, fsm.SuspectType, &fsm.SuspectCommand{Name: name, Addr: addr, Index: index, Suspect: suspect})
	if err != nil {
		return false, err
	}
	return res.Changed, res.Err
}
