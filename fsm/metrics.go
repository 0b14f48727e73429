package fsm

import "sync/atomic"

// Why a watcher was sent the whole state again instead of the changes it
// missed (a resync marker, then the state).
const (
	// ResyncResume: a watch resuming from an index the service's history
	// no longer reaches (the client reconnected after too long).
	ResyncResume = iota
	// ResyncBehind: an open watcher fell further behind than the history
	// reaches (a slow consumer), coalesced into the current state.
	ResyncBehind
	// ResyncRestore: a snapshot replaced the state (a follower installed
	// one from the leader).
	ResyncRestore
	numResyncs
)

// counters are the FSM's event counts since the process started, kept with
// atomic adds beside the state (they are not replicated or snapshotted).
type counters struct {
	removed [ReasonExpire + 1]atomic.Uint64 // instances removed, by Reason
	resyncs [numResyncs]atomic.Uint64       // watcher resyncs, by Resync*
}

// Metrics are the FSM's sizes and counts for /metrics.
type Metrics struct {
	// Services holding instances or metadata, and their instances.
	Services, Instances int
	// Watchers open on this node.
	Watchers int
	// Instances removed since the process started, by why: expired (by
	// the leader's TTL tracker) and unregistered. Every node applies the
	// same removals.
	Expired, Unregistered uint64
	// Resyncs of watchers since the process started, indexed by Resync*.
	Resyncs [numResyncs]uint64
}

// Metrics returns the FSM's sizes and counts now. It reads the state under
// the read lock, one step per service.
func (f *FSM) Metrics() Metrics {
	var m Metrics
	f.mu.RLock()
	m.Services = len(f.st.services) - f.st.emptyCount
	for _, svc := range f.st.services {
		m.Instances += len(svc.instances)
	}
	for _, n := range f.notifiers {
		m.Watchers += n.refs
	}
	f.mu.RUnlock()
	m.Expired, m.Unregistered = f.counters.removed[ReasonExpire].Load(), f.counters.removed[ReasonUnregister].Load()
	for i := range m.Resyncs {
		m.Resyncs[i] = f.counters.resyncs[i].Load()
	}
	return m
}
