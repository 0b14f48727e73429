package client

import (
	"context"
	"fmt"

	"github.com/discoverd/discoverd/internal/wire"
)

// Member is one server of the cluster, with its own status.
type Member = wire.Member

// Members is the cluster's configuration, as its leader sees it.
type Members = wire.MembersResponse

// MemberChange is one membership change (see ChangeMember).
type MemberChange = wire.ChangeMemberRequest

// Membership operations, for MemberChange.Op.
const (
	MemberAdd     = wire.MemberAdd
	MemberRemove  = wire.MemberRemove
	MemberPromote = wire.MemberPromote
	MemberDemote  = wire.MemberDemote
)

// Members lists the cluster's members (from the leader), each with its
// status and how far its applied index is behind the leader's commit index.
func (c *Client) Members(ctx context.Context) (*Members, error) {
	var resp wire.MembersResponse
	if err := c.call(ctx, wire.MethodMembers, &wire.Empty{}, &resp); err != nil {
		return nil, fmt.Errorf("members: %w", err)
	}
	return &resp, nil
}

// ChangeMember makes one membership change through the leader and reports
// whether it changed anything: a change the configuration already has
// succeeds without changing it, so a retry is safe. Adding a voter adds it
// as a non-voter, waits for it to catch up and promotes it; if it does not
// catch up in time the call fails with ErrTimeout and it stays a
// non-voter. A removal or demotion that would leave fewer healthy voters
// than a quorum fails with ErrRefused unless Force is set.
func (c *Client) ChangeMember(ctx context.Context, ch MemberChange) (bool, error) {
	var resp wire.ChangeMemberResponse
	if err := c.call(ctx, wire.MethodChangeMember, &ch, &resp); err != nil {
		return false, fmt.Errorf("%s %s: %w", ch.Op, ch.ID, err)
	}
	return resp.Changed, nil
}
