// Package nemesis injects the fault suite's faults into a harness cluster.
// Each nemesis is a small type with Inject and Heal: kill (leader, random,
// majority), pause the leader, partitions (isolate the leader, majority and
// minority halves, a 5-node bridge, one-way links, flapping), link delay and
// chunk loss, a follower cut off until the leader has compacted past it,
// slow or failing fsync on one node, a fast clock on the leader, membership
// churn, and token churn on a cluster with ACLs on.
package nemesis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/discoverd/discoverd/test/fault/harness"
	"github.com/discoverd/discoverd/test/fault/history"
)

// Nemesis injects one kind of fault and heals it.
type Nemesis interface {
	Name() string
	// Inject starts the fault and describes it (Start is filled in by the caller).
	Inject(ctx context.Context, c *harness.Cluster, rng *rand.Rand) (history.Fault, error)
	// Heal ends it: restart, resume, reconnect, restore.
	Heal(ctx context.Context, c *harness.Cluster) error
}

// ErrUnsupported means the nemesis cannot run on this cluster's network or setup.
var ErrUnsupported = errors.New("nemesis not supported here")

// ByName returns a nemesis.
func ByName(name string) (Nemesis, error) {
	switch name {
	case "kill-leader":
		return &kill{name: name, pick: pickLeader}, nil
	case "kill-random":
		return &kill{name: name, pick: pickRandom}, nil
	case "kill-majority":
		return &kill{name: name, pick: pickMajority}, nil
	case "pause-leader":
		return &pause{}, nil
	case "partition-leader":
		return &partition{name: name, plan: isolateLeader}, nil
	case "partition-follower":
		return &partition{name: name, plan: isolateFollower}, nil
	case "partition-halves":
		return &partition{name: name, plan: halves}, nil
	case "partition-bridge":
		return &partition{name: name, plan: bridge}, nil
	case "partition-one-way":
		return &partition{name: name, plan: oneWay}, nil
	case "partition-flapping":
		return &flapping{}, nil
	case "link-delay":
		return &shape{name: name, delay: 100 * time.Millisecond}, nil
	case "link-loss":
		return &shape{name: name, drop: 0.03}, nil
	case "snapshot-catchup":
		return &catchup{}, nil
	case "clock-fast":
		return &clock{speed: 2}, nil
	case "member-churn":
		return &memberChurn{}, nil
	case "acl-churn":
		return &aclChurn{}, nil
	}
	return nil, fmt.Errorf("unknown nemesis %q (have %s)", name, strings.Join(Names(), ", "))
}

// Names lists every nemesis (the disk ones are added by the runner, which owns the FUSE mounts).
func Names() []string {
	return []string{"kill-leader", "kill-random", "kill-majority", "pause-leader", "partition-leader",
		"partition-follower", "partition-halves", "partition-bridge", "partition-one-way", "partition-flapping", "link-delay",
		"link-loss", "snapshot-catchup", "clock-fast", "member-churn", "acl-churn"}
}

func leader(ctx context.Context, c *harness.Cluster) (int, error) {
	return c.Leader(ctx, 15*time.Second)
}

func ids(c *harness.Cluster, idx []int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, c.Nodes[i].ID)
	}
	return out
}

// kill SIGKILLs nodes and restarts them on heal.
type kill struct {
	name   string
	pick   func(ctx context.Context, c *harness.Cluster, rng *rand.Rand) ([]int, error)
	killed []int
}

func pickLeader(ctx context.Context, c *harness.Cluster, _ *rand.Rand) ([]int, error) {
	l, err := leader(ctx, c)
	return []int{l}, err
}

func pickRandom(_ context.Context, c *harness.Cluster, rng *rand.Rand) ([]int, error) {
	return []int{rng.IntN(len(c.Nodes))}, nil
}

func pickMajority(_ context.Context, c *harness.Cluster, rng *rand.Rand) ([]int, error) {
	perm := rng.Perm(len(c.Nodes))
	out := perm[:len(c.Nodes)/2+1]
	sort.Ints(out)
	return out, nil
}

func (k *kill) Name() string { return k.name }
func (k *kill) Inject(ctx context.Context, c *harness.Cluster, rng *rand.Rand) (history.Fault, error) {
	nodes, err := k.pick(ctx, c, rng)
	if err != nil {
		return history.Fault{}, err
	}
	k.killed = nodes
	for _, i := range nodes {
		if err := c.Kill(i); err != nil {
			return history.Fault{}, err
		}
	}
	return history.Fault{Name: k.name, Nodes: ids(c, nodes), Detail: "SIGKILL, restart on heal"}, nil
}
func (k *kill) Heal(_ context.Context, c *harness.Cluster) error {
	var errs []error
	for _, i := range k.killed {
		errs = append(errs, c.Restart(i))
	}
	return errors.Join(errs...)
}

// pause SIGSTOPs the leader for the hold (longer than an election timeout).
type pause struct{ node int }

func (p *pause) Name() string { return "pause-leader" }
func (p *pause) Inject(ctx context.Context, c *harness.Cluster, _ *rand.Rand) (history.Fault, error) {
	l, err := leader(ctx, c)
	if err != nil {
		return history.Fault{}, err
	}
	p.node = l
	return history.Fault{Name: p.Name(), Nodes: ids(c, []int{l}), Detail: "SIGSTOP, SIGCONT on heal"}, c.Pause(l)
}
func (p *pause) Heal(_ context.Context, c *harness.Cluster) error { return c.Resume(p.node) }

// cuts returns the directed links to cut for a partition plan.
type plan func(ctx context.Context, c *harness.Cluster, rng *rand.Rand) (cuts [][2]int, detail string, nodes []int, err error)

func between(a, b []int) [][2]int {
	var out [][2]int
	for _, i := range a {
		for _, j := range b {
			out = append(out, [2]int{i, j}, [2]int{j, i})
		}
	}
	return out
}

func others(n, i int) []int {
	var out []int
	for j := range n {
		if j != i {
			out = append(out, j)
		}
	}
	return out
}

func isolateLeader(ctx context.Context, c *harness.Cluster, _ *rand.Rand) ([][2]int, string, []int, error) {
	l, err := leader(ctx, c)
	if err != nil {
		return nil, "", nil, err
	}
	return between([]int{l}, others(len(c.Nodes), l)), "leader cut off from every peer (clients still reach it)", []int{l}, nil
}

// isolateFollower cuts a random follower off from every peer; its clients
// still reach it. What it answers then must not pass for the cluster's
// current state.
func isolateFollower(ctx context.Context, c *harness.Cluster, rng *rand.Rand) ([][2]int, string, []int, error) {
	l, err := leader(ctx, c)
	if err != nil {
		return nil, "", nil, err
	}
	fs := others(len(c.Nodes), l)
	f := fs[rng.IntN(len(fs))]
	return between([]int{f}, others(len(c.Nodes), f)), "follower cut off from every peer (clients still reach it)", []int{f}, nil
}

func halves(_ context.Context, c *harness.Cluster, rng *rand.Rand) ([][2]int, string, []int, error) {
	perm := rng.Perm(len(c.Nodes))
	minority := perm[:len(c.Nodes)/2]
	majority := perm[len(c.Nodes)/2:]
	sort.Ints(minority)
	sort.Ints(majority)
	return between(minority, majority), fmt.Sprintf("minority %v | majority %v", ids(c, minority), ids(c, majority)), minority, nil
}

// bridge: on 5 nodes, {a,b} and {d,e} cannot talk, c talks to everyone.
func bridge(_ context.Context, c *harness.Cluster, rng *rand.Rand) ([][2]int, string, []int, error) {
	if len(c.Nodes) != 5 {
		return nil, "", nil, fmt.Errorf("bridge needs 5 nodes: %w", ErrUnsupported)
	}
	p := rng.Perm(5)
	left, mid, right := p[:2], p[2], p[3:]
	return between(left, right), fmt.Sprintf("%v | bridge %s | %v", ids(c, left), c.Nodes[mid].ID, ids(c, right)), []int{mid}, nil
}

// oneWay: the leader's traffic to the others vanishes; theirs still reaches it.
func oneWay(ctx context.Context, c *harness.Cluster, _ *rand.Rand) ([][2]int, string, []int, error) {
	l, err := leader(ctx, c)
	if err != nil {
		return nil, "", nil, err
	}
	var cuts [][2]int
	for _, j := range others(len(c.Nodes), l) {
		cuts = append(cuts, [2]int{l, j})
	}
	return cuts, "leader → others dropped, others → leader pass", []int{l}, nil
}

type partition struct {
	name string
	plan plan
}

func (p *partition) Name() string { return p.name }
func (p *partition) Inject(ctx context.Context, c *harness.Cluster, rng *rand.Rand) (history.Fault, error) {
	cuts, detail, nodes, err := p.plan(ctx, c, rng)
	if err != nil {
		return history.Fault{}, err
	}
	for _, l := range cuts {
		if err := c.Net().Cut(l[0], l[1]); err != nil {
			return history.Fault{}, err
		}
	}
	return history.Fault{Name: p.name, Nodes: ids(c, nodes), Detail: detail}, nil
}
func (p *partition) Heal(_ context.Context, c *harness.Cluster) error { return c.Net().HealAll() }

// flapping isolates a random node, heals, isolates another... every 0.5–1 s
// for as long as the fault is held.
type flapping struct {
	stop func()
	wg   sync.WaitGroup
}

func (f *flapping) Name() string { return "partition-flapping" }
func (f *flapping) Inject(ctx context.Context, c *harness.Cluster, rng *rand.Rand) (history.Fault, error) {
	ctx, cancel := context.WithCancel(ctx)
	f.stop = cancel
	seed := rng.Uint64()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		r := rand.New(rand.NewPCG(seed, 7))
		for ctx.Err() == nil {
			i := r.IntN(len(c.Nodes))
			for _, l := range between([]int{i}, others(len(c.Nodes), i)) {
				_ = c.Net().Cut(l[0], l[1])
			}
			if !sleep(ctx, 500*time.Millisecond+time.Duration(r.Int64N(int64(500*time.Millisecond)))) {
				return
			}
			_ = c.Net().HealAll()
			if !sleep(ctx, 200*time.Millisecond+time.Duration(r.Int64N(int64(300*time.Millisecond)))) {
				return
			}
		}
	}()
	return history.Fault{Name: f.Name(), Detail: "a random node isolated for 0.5-1 s, healed for 0.2-0.5 s, repeatedly"}, nil
}
func (f *flapping) Heal(_ context.Context, c *harness.Cluster) error {
	f.stop()
	f.wg.Wait()
	return c.Net().HealAll()
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// shape delays or drops chunks on every link (proxy network only).
type shape struct {
	name  string
	delay time.Duration
	drop  float64
}

func (s *shape) Name() string { return s.name }
func (s *shape) Inject(_ context.Context, c *harness.Cluster, _ *rand.Rand) (history.Fault, error) {
	sh, ok := c.Net().(harness.Shaper)
	if !ok {
		return history.Fault{}, fmt.Errorf("%s on the %s network: %w", s.name, c.Net().Name(), ErrUnsupported)
	}
	for i := range c.Nodes {
		for _, j := range others(len(c.Nodes), i) {
			if err := sh.Shape(i, j, s.delay, s.drop); err != nil {
				return history.Fault{}, err
			}
		}
	}
	return history.Fault{Name: s.name, Detail: fmt.Sprintf("every link: delay %v, %.0f%% of chunks dropped", s.delay, s.drop*100)}, nil
}
func (s *shape) Heal(_ context.Context, c *harness.Cluster) error {
	sh := c.Net().(harness.Shaper)
	for i := range c.Nodes {
		for _, j := range others(len(c.Nodes), i) {
			if err := sh.Shape(i, j, 0, 0); err != nil {
				return err
			}
		}
	}
	return c.Net().HealAll()
}

// CatchupTrailingLogs is the -trailing-logs the scenarios of
// snapshot-catchup run with (run.compacting): after a snapshot at index S
// a node keeps the log from S - CatchupTrailingLogs + 1 on.
const CatchupTrailingLogs = 32

// catchup isolates a follower and holds the fault until every other node
// has taken a snapshot so far past the follower's last index that its log
// no longer holds the entries after it, so healing makes the leader send
// it a snapshot (run with a low -snapshot-threshold and
// CatchupTrailingLogs).
type catchup struct {
	node     int
	lastSeen uint64
}

func (k *catchup) Name() string { return "snapshot-catchup" }
func (k *catchup) Inject(ctx context.Context, c *harness.Cluster, rng *rand.Rand) (history.Fault, error) {
	l, err := leader(ctx, c)
	if err != nil {
		return history.Fault{}, err
	}
	f := others(len(c.Nodes), l)[rng.IntN(len(c.Nodes)-1)]
	st, err := c.Status(ctx, f, false)
	if err != nil {
		return history.Fault{}, err
	}
	k.node, k.lastSeen = f, st.LastIndex
	for _, link := range between([]int{f}, others(len(c.Nodes), f)) {
		if err := c.Net().Cut(link[0], link[1]); err != nil {
			return history.Fault{}, err
		}
	}
	return history.Fault{Name: k.Name(), Nodes: ids(c, []int{f}),
		Detail: fmt.Sprintf("follower cut off at log index %d until the leader snapshots past it", st.LastIndex)}, nil
}

// WaitCompacted blocks (bounded by ctx) until every other running node has
// a snapshot past the isolated follower's last index by more than the
// trailing logs: whichever of them leads then has to send a snapshot. (A
// snapshot just past that index left the entries after it in the log, and
// the follower caught up without one.)
func (k *catchup) WaitCompacted(ctx context.Context, c *harness.Cluster) error {
	want := k.lastSeen + CatchupTrailingLogs
	for {
		done, behind := true, ""
		for i := range c.Nodes {
			if i == k.node || !c.Running(i) {
				continue
			}
			st, err := c.Status(ctx, i, false)
			if err != nil || st.SnapshotIndex <= want {
				done, behind = false, fmt.Sprintf("%s at snapshot index %d (err %v)", c.Nodes[i].ID, st.SnapshotIndex, err)
				break
			}
		}
		if done {
			return nil
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return fmt.Errorf("the other nodes did not snapshot past index %d (the cut-off follower's %d + %d trailing logs): %s: %w",
				want, k.lastSeen, CatchupTrailingLogs, behind, ctx.Err())
		}
	}
}

func (k *catchup) Heal(_ context.Context, c *harness.Cluster) error { return c.Net().HealAll() }

// Compactor is a nemesis whose hold must last until a condition holds.
type Compactor interface {
	WaitCompacted(ctx context.Context, c *harness.Cluster) error
}

// clock runs the leader's TTL clock fast.
type clock struct {
	speed float64
	node  int
}

func (k *clock) Name() string { return "clock-fast" }
func (k *clock) Inject(ctx context.Context, c *harness.Cluster, _ *rand.Rand) (history.Fault, error) {
	l, err := leader(ctx, c)
	if err != nil {
		return history.Fault{}, err
	}
	k.node = l
	return history.Fault{Name: k.Name(), Nodes: ids(c, []int{l}), Detail: fmt.Sprintf("TTL clock at %gx", k.speed)},
		c.SetClockSpeed(l, k.speed)
}
func (k *clock) Heal(_ context.Context, c *harness.Cluster) error { return c.SetClockSpeed(k.node, 1) }
