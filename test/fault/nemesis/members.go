package nemesis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/test/fault/harness"
	"github.com/discoverd/discoverd/test/fault/history"
)

// memberChurn changes the cluster's members while a leader dies: it
// removes a follower, empties it and starts it again with -join (a new
// node under the old id: added as a non-voter, promoted once caught up),
// demotes another follower, and kills the leader while the new node
// catches up. Heal restarts the leader, promotes the demoted node and
// makes sure the rejoined one is a voter. It needs five nodes: the three
// voters left (of four) keep a quorum through the kill.
type memberChurn struct {
	leader, removed, demoted int
}

// churnTimeout bounds each membership change (they wait for a leader and,
// for a promotion, for the node to catch up).
const churnTimeout = 30 * time.Second

func (m *memberChurn) Name() string { return "member-churn" }

func (m *memberChurn) Inject(ctx context.Context, c *harness.Cluster, rng *rand.Rand) (history.Fault, error) {
	if len(c.Nodes) < 5 {
		return history.Fault{}, fmt.Errorf("member-churn needs 5 nodes, the cluster has %d: %w", len(c.Nodes), ErrUnsupported)
	}
	l, err := leader(ctx, c)
	if err != nil {
		return history.Fault{}, err
	}
	followers := others(len(c.Nodes), l)
	rng.Shuffle(len(followers), func(i, j int) { followers[i], followers[j] = followers[j], followers[i] })
	m.leader, m.removed, m.demoted = l, followers[0], followers[1]
	rm, dm := c.Nodes[m.removed].ID, c.Nodes[m.demoted].ID
	if err := c.ChangeMember(ctx, wire.ChangeMemberRequest{Op: wire.MemberRemove, ID: rm}, churnTimeout); err != nil {
		return history.Fault{}, err
	}
	if err := c.Rejoin(m.removed); err != nil {
		return history.Fault{}, err
	}
	if err := c.ChangeMember(ctx, wire.ChangeMemberRequest{Op: wire.MemberDemote, ID: dm}, churnTimeout); err != nil {
		return history.Fault{}, err
	}
	if err := c.Kill(l); err != nil {
		return history.Fault{}, err
	}
	return history.Fault{Name: m.Name(), Nodes: ids(c, []int{l, m.removed, m.demoted}),
		Detail: fmt.Sprintf("removed %s and started it empty with -join; demoted %s; SIGKILL leader %s; heal: restart %s, promote %s, %s a voter",
			rm, dm, c.Nodes[l].ID, c.Nodes[l].ID, dm, rm)}, nil
}

func (m *memberChurn) Heal(ctx context.Context, c *harness.Cluster) error {
	errs := []error{c.Restart(m.leader)}
	for _, i := range []int{m.demoted, m.removed} {
		// add is idempotent: it promotes a non-voter once caught up, and
		// adds the rejoined node if its own join has not got through yet.
		errs = append(errs, c.ChangeMember(ctx, wire.ChangeMemberRequest{Op: wire.MemberAdd, ID: c.Nodes[i].ID, Addr: c.Nodes[i].Addrs.Advertise}, churnTimeout))
	}
	return errors.Join(errs...)
}
