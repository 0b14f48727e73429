package wire

// Membership methods (docs/protocol.md, section 15).
const (
	// MethodMembers lists the cluster's members with each one's state.
	MethodMembers = "Members"
	// MethodChangeMember adds, removes, promotes or demotes one member.
	MethodChangeMember = "ChangeMember"
)

// ChangeMember operations.
const (
	MemberAdd     = "add"
	MemberRemove  = "remove"
	MemberPromote = "promote"
	MemberDemote  = "demote"
)

// Member is one server of the cluster's Raft configuration, with what it
// says of itself (Status is empty when it did not answer).
type Member struct {
	ID    string `codec:"id"`
	Addr  string `codec:"addr"`
	Voter bool   `codec:"voter"`
	// Lag is how many entries the member's applied index is behind the
	// leader's commit index (0 when it did not answer).
	Lag    uint64     `codec:"lag"`
	Status NodeStatus `codec:"status"`
}

// MembersResponse is the leader's configuration with every member's state.
type MembersResponse struct {
	Leader      string   `codec:"leader"`
	CommitIndex uint64   `codec:"commit_index"` // the leader's, which Lag is measured from
	Members     []Member `codec:"members"`
}

// ChangeMemberRequest changes one member. Add with a known id and another
// address changes the member's address; a change the configuration already
// has changes nothing and succeeds (Changed false).
type ChangeMemberRequest struct {
	Op   string `codec:"op"` // add, remove, promote or demote
	ID   string `codec:"id"`
	Addr string `codec:"addr,omitempty"` // add only
	// NonVoter: add as a non-voter and leave it so (a read replica).
	// Otherwise add makes a voter: the member joins as a non-voter and is
	// promoted once it has caught up.
	NonVoter bool `codec:"nonvoter,omitempty"`
	// Force skips the check that the change leaves a quorum of healthy
	// voters.
	Force bool `codec:"force,omitempty"`
}

// ChangeMemberResponse says what the change did.
type ChangeMemberResponse struct {
	Changed bool   `codec:"changed"`
	Index   uint64 `codec:"index"` // the configuration's log index after the change
}
