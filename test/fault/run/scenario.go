// Package run executes fault-suite scenarios: it starts a harness cluster,
// drives the workload, injects faults on a seeded schedule (quiet → inject →
// hold → heal → recovery check), ends with everything healed, a final write
// and a final consistent read, collects the history and every node's
// journal, runs the checkers and writes a report folder.
package run

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/discoverd/discoverd/test/fault/nemesis"
	"github.com/discoverd/discoverd/test/fault/workload"
)

// Scenario is one run's plan.
type Scenario struct {
	Name     string
	Nodes    int
	Network  string   // proxy (default), netns, loopback
	Nemeses  []string // injected in turn
	Duration time.Duration
	Quiet    time.Duration // before each fault
	Hold     time.Duration // how long each fault lasts (±25%)
	Seed     int64
	Workload workload.Config
	Args     []string // extra server flags (e.g. a low -snapshot-threshold)
	Bug      string   // a planted bug ($DISCOVERD_BUG, faultbugs build) — proof runs only
	Disk     bool     // put node 1's data dir on the FUSE layer (slow-fsync / fsync-error nemeses)
	TLS      bool     // nodes and clients speak TLS (Raft mutual TLS), with certificates made for the run
	// ACL runs the nodes with -acl: the harness bootstraps, keeps the
	// management token for its own calls and gives every workload client
	// a token with harness.WorkloadRules (check.ACL).
	ACL bool
	// LogStore is the nodes' Raft log store: "" (bolt, the default),
	// LogStoreWAL (-raft-log-store wal on every node) or LogStoreMixed
	// (node 1 on the WAL, the others on bolt). Node 1 is also the one
	// whose data dir Disk puts on the FUSE layer.
	LogStore string
}

// Log stores of a scenario (Scenario.LogStore).
const (
	LogStoreWAL   = "wal"
	LogStoreMixed = "mixed"
)

// nodeArgs are node i's flags for the scenario's log store.
func (sc Scenario) nodeArgs(i int) []string {
	if sc.LogStore == LogStoreWAL || (sc.LogStore == LogStoreMixed && i == 0) {
		return []string{"-raft-log-store", "wal"}
	}
	return nil
}

// Tier names.
const (
	TierShort = "short" // inside `go test ./...`
	TierCI    = "ci"    // make fault, .ci/run
	TierLong  = "long"  // make fault-long, on demand
	TierWAL   = "wal"   // make fault-wal: the CI tier's kill and partitions, snapshot catch-up and the disk faults on the WAL log store, and a mixed cluster
)

func base(name string, seed int64, nemeses ...string) Scenario {
	w := workload.DefaultConfig()
	w.Seed = seed
	return Scenario{Name: name, Nodes: 3, Network: "proxy", Nemeses: nemeses, Duration: 40 * time.Second,
		Quiet: 3 * time.Second, Hold: 5 * time.Second, Seed: seed, Workload: w}
}

// compacting makes the leader snapshot and truncate its log often.
var compacting = []string{"-snapshot-threshold", "64", "-trailing-logs", strconv.Itoa(nemesis.CatchupTrailingLogs), "-snapshot-interval", "1s"}

// Tier returns the scenarios of a tier for a seed.
func Tier(name string, seed int64, duration time.Duration) ([]Scenario, error) {
	var out []Scenario
	switch name {
	case TierShort:
		s := base("kill-leader", seed, "kill-leader")
		s.Duration, s.Quiet, s.Hold = 14*time.Second, 2*time.Second, 3*time.Second
		s.Workload.Services, s.Workload.Watchers, s.Workload.TTLClients = 3, 4, 3
		out = append(out, s)
	case TierCI:
		out = append(out,
			base("kill", seed, "kill-leader", "kill-random", "kill-majority"),
			base("pause-leader", seed, "pause-leader"),
			base("partition-leader", seed, "partition-leader", "partition-one-way"),
			func() Scenario {
				s := base("halves-bridge-5", seed, "partition-halves", "partition-bridge")
				s.Nodes = 5
				return s
			}(),
			base("flaky-links", seed, "link-delay", "link-loss", "partition-flapping"),
			func() Scenario {
				s := base("snapshot-catchup", seed, "snapshot-catchup")
				s.Args = compacting
				return s
			}(),
			func() Scenario {
				s := base("ttl-failover", seed, "kill-leader", "pause-leader", "clock-fast")
				s.Workload.Services, s.Workload.TTLServices, s.Workload.TTLClients = 2, 3, 5
				s.Workload.StopShare = 0.4
				return s
			}(),
			func() Scenario {
				// The expiry-storm guard (ttl/DESIGN.md): 9 of a service's 12
				// clients are cut off together for 2 TTLs (held, marked
				// suspect, alive again when they come back), then stop for
				// good (held, expired at the max hold), while the leader is
				// killed and paused.
				s := base("ttl-storm", seed, "kill-leader", "pause-leader")
				s.Workload.Storm = workload.Storm{Clients: 12, Share: 0.75, CutAt: 6 * time.Second, Cut: 4 * time.Second, StopAt: 20 * time.Second}
				s.Workload.Watchers = 8 // one on storm0
				return s
			}(),
			func() Scenario {
				// Clients pinned to followers that get cut off from the leader.
				s := base("client-cut-off", seed, "partition-halves", "partition-leader")
				s.Workload.FollowerOnly = 0.75
				return s
			}(),
			func() Scenario {
				// Membership changes (remove, rejoin empty, demote,
				// promote) with a leader killed in the middle of them,
				// between rounds of lossy links; a compacting log makes
				// the rejoined node catch up from a snapshot.
				s := base("membership-5", seed, "member-churn", "link-loss", "member-churn")
				s.Nodes, s.Args = 5, compacting
				return s
			}(),
			// The same faults with TLS on: Raft reconnects over mutual TLS
			// after every kill and partition.
			func() Scenario {
				s := base("kill-tls", seed, "kill-leader", "kill-random")
				s.TLS = true
				return s
			}(),
			func() Scenario {
				s := base("partition-tls", seed, "partition-leader", "partition-one-way")
				s.TLS = true
				return s
			}(),
			// ACLs on: every workload client presents its token while
			// tokens are created, changed and deleted around it, the leader
			// is killed and cut off; it must never be denied, and every
			// node must end with the same tokens.
			func() Scenario {
				s := base("acl", seed, "kill-leader", "acl-churn", "partition-leader")
				s.ACL = true
				return s
			}(),
		)
	case TierLong:
		for i := range 4 {
			sd := seed + int64(i)
			out = append(out,
				func() Scenario {
					s := base(fmt.Sprintf("mixed-3-s%d", sd), sd, "kill-leader", "pause-leader", "partition-halves",
						"partition-one-way", "partition-flapping", "link-loss", "clock-fast", "kill-majority")
					s.Duration = 120 * time.Second
					return s
				}(),
				func() Scenario {
					s := base(fmt.Sprintf("mixed-5-s%d", sd), sd, "partition-bridge", "kill-leader", "partition-halves",
						"pause-leader", "link-delay", "member-churn", "kill-random")
					s.Nodes, s.Duration = 5, 120*time.Second
					return s
				}(),
			)
		}
		out = append(out,
			func() Scenario {
				s := base("netns-partitions", seed, "partition-leader", "partition-halves", "partition-one-way", "kill-leader")
				s.Network, s.Duration = "netns", 90*time.Second
				return s
			}(),
			func() Scenario {
				s := base("disk-and-clock", seed, "slow-fsync", "fsync-error", "clock-fast")
				s.Disk, s.Duration = true, 90*time.Second
				return s
			}(),
			func() Scenario {
				s := base("snapshot-catchup-5", seed, "snapshot-catchup", "kill-random")
				s.Nodes, s.Args, s.Duration = 5, compacting, 90*time.Second
				return s
			}(),
		)
	case TierWAL:
		wal := func(s Scenario) Scenario {
			s.LogStore = LogStoreWAL
			return s
		}
		out = append(out,
			wal(base("kill-wal", seed, "kill-leader", "kill-random", "kill-majority")),
			wal(base("partition-leader-wal", seed, "partition-leader", "partition-one-way")),
			func() Scenario {
				// A follower catches up by snapshot: raft deletes its whole
				// WAL (it takes no gap) and appends from the snapshot on.
				s := wal(base("snapshot-catchup-wal", seed, "snapshot-catchup"))
				s.Args = compacting
				return s
			}(),
			func() Scenario {
				// One WAL node among bolt ones: killed, cut off, lagging
				// behind a snapshot, as leader and as follower.
				s := base("mixed-store", seed, "kill-leader", "kill-random", "partition-leader", "snapshot-catchup")
				s.LogStore, s.Args = LogStoreMixed, compacting
				return s
			}(),
			func() Scenario {
				s := wal(base("disk-and-clock-wal", seed, "slow-fsync", "fsync-error", "clock-fast"))
				s.Disk, s.Duration = true, 90*time.Second
				return s
			}(),
		)
	default:
		return nil, fmt.Errorf("tier %q: want %s, %s, %s or %s", name, TierShort, TierCI, TierLong, TierWAL)
	}
	if duration > 0 {
		for i := range out {
			out[i].Duration = duration
		}
	}
	return out, nil
}

// ByName finds a scenario of any tier.
func ByName(name string, seed int64) (Scenario, error) {
	var names []string
	for _, tier := range []string{TierShort, TierCI, TierLong, TierWAL} {
		scs, _ := Tier(tier, seed, 0)
		for _, s := range scs {
			if s.Name == name {
				return s, nil
			}
			names = append(names, s.Name)
		}
	}
	return Scenario{}, fmt.Errorf("no scenario %q (have %s)", name, strings.Join(names, ", "))
}
