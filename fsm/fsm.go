// Package fsm is discoverd's replicated state machine: the registry of
// services and their instances, plus a bounded recent history of events per
// service that watch streams resume from, and the ACL tokens (acl.go).
//
// It sits below raftnode: every committed log entry reaches Apply (or
// ApplyBatch) on every node, in the same order. Apply is deterministic — it
// never reads a clock, draws a random number or makes an id; every index comes
// from the log. The package knows nothing of the network.
//
// Besides the replicated state, an FSM keeps things that are local to the
// node and never replicated: the wake-up channels of open watchers, the
// Observer (the leader's TTL tracker) that is told about every change, and
// the listeners told of every change of the ACL state (OnACLChange).
//
// See DESIGN.md for the reasons behind the choices.
package fsm

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/codes"
)

// Instance is one registered (service name, address). Stored instances are
// immutable: a change stores a new *Instance, so a pointer handed out stays
// valid and can be read without the FSM's lock.
type Instance struct {
	Name        string
	Addr        string
	Attrs       map[string]string
	TTL         time.Duration
	CreateIndex uint64 // index of the first registration; kept across re-registrations
	ModifyIndex uint64 // index of the last registration
	// Suspect: the leader's expiry-storm guard holds back this
	// registration's expiry although its TTL ran out (SuspectCommand). A
	// registration clears it. Absent from snapshots while false, so older
	// snapshots restore with it false.
	Suspect bool `codec:",omitempty"`
}

// EventKind says what an Event means.
type EventKind uint8

const (
	EventUp      EventKind = 1 // an instance appeared
	EventUpdate  EventKind = 2 // an instance was registered again, or its suspect marker changed
	EventDown    EventKind = 3 // an instance went away
	EventCurrent EventKind = 4 // watch streams only: the state sent so far is complete at Index
	EventResync  EventKind = 5 // watch streams only: history was lost, a full state follows
	EventMeta    EventKind = 6 // the service's metadata was set (Meta), or deleted (Meta nil)
)

func (k EventKind) String() string {
	switch k {
	case EventUp:
		return "up"
	case EventUpdate:
		return "update"
	case EventDown:
		return "down"
	case EventCurrent:
		return "current"
	case EventResync:
		return "resync"
	case EventMeta:
		return "meta"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Reason says why an instance went down.
type Reason uint8

const (
	ReasonNone       Reason = 0
	ReasonUnregister Reason = 1
	ReasonExpire     Reason = 2
)

// Event is one change to a service, produced by the log entry at Index.
type Event struct {
	Kind     EventKind
	Index    uint64
	Name     string
	Instance *Instance // the new instance (up, update) or the removed one (down); nil for markers
	Reason   Reason
	// Meta is the service's new metadata on a meta event; nil on one that
	// deleted it (and on every other kind).
	Meta *Meta `codec:",omitempty"`
}

// Result is what applying a command returns through raft's ApplyFuture.
type Result struct {
	Index   uint64 // the write's index (see ApplyBatch; of the first write, for a duplicate request id)
	Changed bool   // whether the state changed
	Err     error  // a business failure, e.g. codes.ErrNotFound; nil on success
	// ACLToken is, for an acl-bootstrap command, the management token it
	// made, and for an acl-set-token command, the token as it stored it (a
	// copy); nil otherwise and on failure. Never kept in the request table
	// or a snapshot: ACL commands carry no request id.
	ACLToken *ACLToken
}

// Observer is told about every change to instances, on every node. It is
// called with the FSM's lock held: it must be quick, must not block and must
// not call back into the FSM. The leader's TTL tracker is the observer.
type Observer interface {
	InstanceRegistered(in *Instance)
	InstanceRemoved(name, addr string)
	// Restored is called after a snapshot replaced the whole state.
	Restored()
	// VotersApplied is called for every Raft configuration entry applied,
	// with the ids of its voters, sorted.
	VotersApplied(voters []string)
}

// Config bounds the FSM's memory. The zero value of a field means its default.
type Config struct {
	// HistoryPerService is how many recent events each service keeps for
	// watches to resume from. Default 1024.
	HistoryPerService int
	// MaxEmptyServices is how many services with no instances are kept (with
	// their history) before the longest-empty one is forgotten. Default 4096.
	MaxEmptyServices int
	// MaxRequestIDs is how many recent write request ids are remembered to
	// make retried writes idempotent. Default 32768.
	MaxRequestIDs int
	// HistoryMetaBytes bounds the metadata a service's history holds: when
	// the data of the meta events in it passes this many bytes, its oldest
	// events are dropped (watchers resuming from before them resync), so
	// a service whose metadata changes often does not keep 1024 copies of
	// it. Default 1 MiB. Like the other bounds, it must be the same on
	// every node.
	HistoryMetaBytes int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{HistoryPerService: 1024, MaxEmptyServices: 4096, MaxRequestIDs: 32768, HistoryMetaBytes: 1 << 20}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.HistoryPerService <= 0 {
		c.HistoryPerService = d.HistoryPerService
	}
	if c.MaxEmptyServices <= 0 {
		c.MaxEmptyServices = d.MaxEmptyServices
	}
	if c.MaxRequestIDs <= 0 {
		c.MaxRequestIDs = d.MaxRequestIDs
	}
	if c.HistoryMetaBytes <= 0 {
		c.HistoryMetaBytes = d.HistoryMetaBytes
	}
	return c
}

type service struct {
	name      string
	instances map[string]*Instance
	meta      *Meta // its metadata; nil: none
	history   *history
	lastIndex uint64 // index of the newest event
	// emptySince is the index at which it became empty — no instances and
	// no metadata — and 0 while it is not. Only empty services are ever
	// forgotten: metadata stays until it is deleted.
	emptySince uint64
}

// empty reports whether the service holds nothing but its history.
func (svc *service) empty() bool { return len(svc.instances) == 0 && svc.meta == nil }

// state is everything that is replicated and snapshotted.
type state struct {
	services map[string]*service
	applied  uint64
	// forgottenThrough is the highest event index of any service forgotten
	// because it stayed empty; a watcher of an unknown service resuming from
	// before it must resync.
	forgottenThrough uint64
	emptyQueue       []emptyEntry // services in the order they became empty (may hold stale entries)
	emptyCount       int
	requests         *requestTable
	acl              aclState // fsm/acl.go
}

type emptyEntry struct {
	name  string
	since uint64
}

// FSM implements raft.FSM and raft.BatchingFSM.
type FSM struct {
	cfg      Config
	observer Observer // set before raft starts, never changed after
	journal  Journal  // optional; set before raft starts

	mu sync.RWMutex
	// Guarded by mu:
	st        *state
	gen       uint64 // bumped by Restore: open watchers resync
	notifiers map[string]*notifier
	appliedCh chan struct{} // closed and replaced after every applied batch
	// aclVersion counts changes of the ACL state (ACLState.Version);
	// aclPending says one happened that the listeners were not told of yet.
	aclVersion uint64
	aclPending bool

	aclListeners aclListeners // OnACLChange; its own lock

	counters counters // for /metrics (metrics.go); atomics, not state
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

// New returns an empty FSM.
func New(cfg Config) *FSM {
	cfg = cfg.withDefaults()
	return &FSM{
		cfg:       cfg,
		st:        newState(cfg),
		notifiers: map[string]*notifier{},
		appliedCh: make(chan struct{}),
	}
}

func newState(cfg Config) *state {
	return &state{services: map[string]*service{}, requests: newRequestTable(cfg.MaxRequestIDs), acl: aclState{tokens: map[string]*ACLToken{}}}
}

// SetObserver installs the observer. Call it before the FSM receives entries.
func (f *FSM) SetObserver(o Observer) { f.observer = o }

// Journal receives every applied entry, in order, with the FSM's lock held
// (so it must be quick), then Flush once per applied batch. The fault suite
// reads the journals of all nodes to check that replicas agree and to
// resolve writes whose outcome a client did not learn.
type Journal interface {
	Applied(e JournalEntry)
	Flush()
}

// JournalEntry describes one applied change (one command, or a Raft
// configuration entry: Type 0). Index is the change's index; RaftIndex the
// index of the log entry that carried it (different only after a batch
// entry, see ApplyBatch).
type JournalEntry struct {
	Index, Term uint64
	RaftIndex   uint64
	Type        MessageType
	RequestID   string
	Name, Addr  string
	TTL         time.Duration
	ExpireIndex uint64 // expire, suspect: the registration index named
	DecidedAt   int64  // expire: informational, see ExpireCommand
	// set-meta, delete-meta: the index the command expected, and the
	// metadata's index before it (0: none), whatever the outcome.
	MetaExpect, MetaIndex uint64
	Suspect               bool // suspect: the marker set
	Changed               bool
	Err                   error
}

// SetJournal installs a journal. Call it before the FSM receives entries.
func (f *FSM) SetJournal(j Journal) { f.journal = j }

// Apply applies one committed entry.
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries in order, under one lock, then tells
// the OnACLChange listeners if the ACL state changed. A command
// entry returns its *Result; a batch entry (BatchType) returns a []any
// holding one *Result per command in it; anything else returns nil.
//
// Indices. Every applied write (and configuration entry) gets its own index:
// the entry's Raft index, or one past the previous index if that is higher —
// which happens only after a batch entry, whose commands took consecutive
// indices from the entry's own. So indices are unique, increase with the
// log, depend on the log alone (every node assigns the same ones), and equal
// the Raft index for as long as no batch entry was applied.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out, aclChanged := f.applyBatch(logs)
	if aclChanged {
		f.notifyACL() // after the unlock: listeners read the FSM
	}
	return out
}

func (f *FSM) applyBatch(logs []*raft.Log) ([]any, bool) {
	out := make([]any, len(logs))
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, l := range logs {
		switch l.Type {
		case raft.LogCommand:
			if len(l.Data) > 0 && MessageType(l.Data[0]) == BatchType {
				cmds, err := decodeBatch(l.Data[1:])
				if err != nil {
					panic(fmt.Sprintf("fsm: cannot decode batch entry at index %d: %v", l.Index, err))
				}
				rs := make([]any, len(cmds))
				for j, c := range cmds {
					rs[j] = f.applyOneLocked(l, c)
				}
				out[i] = rs
			} else {
				out[i] = f.applyOneLocked(l, l.Data)
			}
		case raft.LogConfiguration:
			if f.observer != nil {
				f.observer.VotersApplied(voterIDs(l.Data))
			}
			idx := f.nextIndexLocked(l.Index)
			f.st.applied = idx
			if f.journal != nil {
				f.journal.Applied(JournalEntry{Index: idx, Term: l.Term, RaftIndex: l.Index})
			}
		}
	}
	if f.journal != nil {
		f.journal.Flush()
	}
	close(f.appliedCh)
	f.appliedCh = make(chan struct{})
	return out, f.takeACLPendingLocked()
}

// nextIndexLocked returns the index of the next thing applied from the entry
// at raftIndex (see ApplyBatch). Lock must be held.
func (f *FSM) nextIndexLocked(raftIndex uint64) uint64 {
	return max(f.st.applied+1, raftIndex)
}

// applyOneLocked applies one command of entry l. Lock must be held.
func (f *FSM) applyOneLocked(l *raft.Log, data []byte) *Result {
	idx := f.nextIndexLocked(l.Index)
	r, je := f.applyCommandLocked(idx, data) // panics, changing nothing, on an entry it cannot decode
	f.st.applied = idx
	// Per command, never per batch of entries: those differ between nodes,
	// and what is forgotten must depend on the log alone.
	f.evictEmptyLocked()
	if f.journal != nil {
		// A retried request id is answered with the first result (whose
		// Index is the first write's): this command itself changed nothing.
		je.Index, je.Term, je.RaftIndex, je.Err = idx, l.Term, l.Index, r.Err
		je.Changed = r.Changed && r.Index == idx
		f.journal.Applied(je)
	}
	return r
}

// applyCommandLocked applies one command. An entry that cannot be decoded
// means this node cannot follow the log: continuing would diverge, so it panics.
// Lock must be held.
func (f *FSM) applyCommandLocked(index uint64, data []byte) (*Result, JournalEntry) {
	if len(data) == 0 {
		panic(fmt.Sprintf("fsm: empty log entry at index %d", index))
	}
	t, body := MessageType(data[0]), data[1:]
	switch t {
	case RegisterType:
		var c RegisterCommand
		mustDecode(index, t, body, &c)
		return f.registerLocked(index, &c), JournalEntry{Type: t, RequestID: c.RequestID, Name: c.Name, Addr: c.Addr, TTL: c.TTL}
	case UnregisterType, UnregisterIfType:
		var c UnregisterCommand
		mustDecode(index, t, body, &c)
		if t == UnregisterType {
			c.IfIndex = 0 // only UnregisterIfType is conditional
		} else if c.IfIndex == 0 {
			panic(fmt.Sprintf("fsm: %s entry at index %d without an index", t, index))
		}
		// The journal records the operation: an unregistration either way.
		return f.unregisterLocked(index, &c), JournalEntry{Type: UnregisterType, RequestID: c.RequestID, Name: c.Name, Addr: c.Addr}
	case ExpireType:
		var c ExpireCommand
		mustDecode(index, t, body, &c)
		return f.expireLocked(index, &c), JournalEntry{Type: t, Name: c.Name, Addr: c.Addr, ExpireIndex: c.Index, DecidedAt: c.DecidedAt}
	case SetMetaType:
		var c SetMetaCommand
		mustDecode(index, t, body, &c)
		before := f.metaIndexLocked(c.Name)
		return f.setMetaLocked(index, &c), JournalEntry{Type: t, RequestID: c.RequestID, Name: c.Name, MetaExpect: c.ExpectIndex, MetaIndex: before}
	case DeleteMetaType:
		var c DeleteMetaCommand
		mustDecode(index, t, body, &c)
		before := f.metaIndexLocked(c.Name)
		return f.deleteMetaLocked(index, &c), JournalEntry{Type: t, RequestID: c.RequestID, Name: c.Name, MetaExpect: c.ExpectIndex, MetaIndex: before}
	case SuspectType:
		var c SuspectCommand
		mustDecode(index, t, body, &c)
		return f.suspectLocked(index, &c), JournalEntry{Type: t, Name: c.Name, Addr: c.Addr, ExpireIndex: c.Index, Suspect: c.Suspect}
	case ACLBootstrapType:
		var c ACLBootstrapCommand
		mustDecode(index, t, body, &c)
		return f.aclBootstrapLocked(index, &c), JournalEntry{Type: t}
	case ACLSetTokenType:
		var c ACLSetTokenCommand
		mustDecode(index, t, body, &c)
		return f.aclSetTokenLocked(index, &c), JournalEntry{Type: t}
	case ACLDeleteTokenType:
		var c ACLDeleteTokenCommand
		mustDecode(index, t, body, &c)
		return f.aclDeleteTokenLocked(index, &c), JournalEntry{Type: t}
	}
	panic(fmt.Sprintf("fsm: unknown message type %d at index %d (written by a newer discoverd?)", t, index))
}

func mustDecode(index uint64, t MessageType, body []byte, v any) {
	if err := decode(body, v); err != nil {
		panic(fmt.Sprintf("fsm: cannot decode %s entry at index %d: %v", t, index, err))
	}
}

// Lock must be held.
func (f *FSM) registerLocked(index uint64, c *RegisterCommand) *Result {
	if r, ok := f.st.requests.get(c.RequestID); ok {
		return r
	}
	svc := f.serviceLocked(c.Name, true)
	old := svc.instances[c.Addr]
	in := &Instance{Name: svc.name, Addr: c.Addr, Attrs: c.Attrs, TTL: c.TTL, CreateIndex: index, ModifyIndex: index}
	kind := EventUp
	if old != nil {
		in.CreateIndex = old.CreateIndex
		kind = EventUpdate
	}
	svc.instances[c.Addr] = in
	f.markNotEmptyLocked(svc)
	f.recordLocked(svc, Event{Kind: kind, Index: index, Name: svc.name, Instance: in})
	if f.observer != nil {
		f.observer.InstanceRegistered(in)
	}
	r := &Result{Index: index, Changed: true}
	f.st.requests.put(c.RequestID, r)
	return r
}

// Lock must be held.
func (f *FSM) unregisterLocked(index uint64, c *UnregisterCommand) *Result {
	if r, ok := f.st.requests.get(c.RequestID); ok {
		return r
	}
	r := &Result{Index: index}
	svc := f.st.services[c.Name]
	var in *Instance
	if svc != nil {
		in = svc.instances[c.Addr]
	}
	switch {
	case in == nil:
		r.Err = fmt.Errorf("unregister %s %s: %w", c.Name, c.Addr, codes.ErrNotFound)
	case c.IfIndex != 0 && in.ModifyIndex != c.IfIndex:
		// Registered again since (by another registrant, or this one):
		// that registration is not the caller's to remove.
		r.Err = fmt.Errorf("unregister %s %s: registered again at index %d since the registration at %d, left in place: %w",
			c.Name, c.Addr, in.ModifyIndex, c.IfIndex, codes.ErrNotFound)
	default:
		f.removeLocked(svc, c.Addr, index, ReasonUnregister)
		r.Changed = true
	}
	f.st.requests.put(c.RequestID, r)
	return r
}

// Lock must be held.
func (f *FSM) expireLocked(index uint64, c *ExpireCommand) *Result {
	r := &Result{Index: index}
	svc := f.st.services[c.Name]
	if svc == nil {
		return r
	}
	// Only the exact registration the leader timed out is removed; one
	// registered again in the meantime has a newer ModifyIndex and stays.
	if in := svc.instances[c.Addr]; in != nil && in.ModifyIndex == c.Index {
		f.removeLocked(svc, c.Addr, index, ReasonExpire)
		r.Changed = true
	}
	return r
}

// suspectLocked sets the suspect marker of the exact registration named; a
// registration made since, or a marker already so, is left alone. The change
// is an update event of the instance (same CreateIndex and ModifyIndex). The
// observer is not told: the marker changes no deadline. Lock must be held.
func (f *FSM) suspectLocked(index uint64, c *SuspectCommand) *Result {
	r := &Result{Index: index}
	svc := f.st.services[c.Name]
	if svc == nil {
		return r
	}
	in := svc.instances[c.Addr]
	if in == nil || in.ModifyIndex != c.Index || in.Suspect == c.Suspect {
		return r
	}
	marked := *in // instances are immutable: store a changed copy
	marked.Suspect = c.Suspect
	svc.instances[c.Addr] = &marked
	f.recordLocked(svc, Event{Kind: EventUpdate, Index: index, Name: svc.name, Instance: &marked})
	r.Changed = true
	return r
}

// Lock must be held.
func (f *FSM) removeLocked(svc *service, addr string, index uint64, why Reason) {
	in := svc.instances[addr]
	delete(svc.instances, addr)
	f.counters.removed[why].Add(1)
	f.markEmptyLocked(svc, index)
	f.recordLocked(svc, Event{Kind: EventDown, Index: index, Name: svc.name, Instance: in, Reason: why})
	if f.observer != nil {
		f.observer.InstanceRemoved(svc.name, addr)
	}
}

// markEmptyLocked notes, after a removal at index, that svc became empty
// (no instances, no metadata), if it did. Lock must be held.
func (f *FSM) markEmptyLocked(svc *service, index uint64) {
	if svc.empty() && svc.emptySince == 0 {
		svc.emptySince = index
		f.st.emptyCount++
		f.st.emptyQueue = append(f.st.emptyQueue, emptyEntry{svc.name, index})
	}
}

// markNotEmptyLocked notes that svc got an instance or metadata. Lock must
// be held.
func (f *FSM) markNotEmptyLocked(svc *service) {
	if svc.emptySince != 0 {
		svc.emptySince = 0
		f.st.emptyCount--
	}
}

// recordLocked appends an event to the service's history and wakes its watchers.
// Lock must be held.
func (f *FSM) recordLocked(svc *service, e Event) {
	svc.history.push(e)
	svc.lastIndex = e.Index
	if n := f.notifiers[svc.name]; n != nil {
		n.wake()
	}
}

// serviceLocked returns the named service, creating it if create is set.
// Lock must be held.
func (f *FSM) serviceLocked(name string, create bool) *service {
	svc := f.st.services[name]
	if svc == nil && create {
		svc = f.newService(name)
		// A service forgotten earlier under this name may have had events a
		// watcher has not seen; a watcher resuming from before that must resync.
		svc.history.truncatedThrough = f.st.forgottenThrough
		f.st.services[name] = svc
	}
	return svc
}

func (f *FSM) newService(name string) *service {
	return &service{name: name, instances: map[string]*Instance{}, history: newHistory(f.cfg.HistoryPerService, f.cfg.HistoryMetaBytes)}
}

// evictEmptyLocked forgets the longest-empty services beyond MaxEmptyServices.
// Lock must be held.
func (f *FSM) evictEmptyLocked() {
	st := f.st
	for st.emptyCount > f.cfg.MaxEmptyServices && len(st.emptyQueue) > 0 {
		e := st.emptyQueue[0]
		st.emptyQueue = st.emptyQueue[1:]
		svc := st.services[e.name]
		if svc == nil || svc.emptySince != e.since {
			continue // stale: the service got instances again after that
		}
		delete(st.services, e.name)
		st.emptyCount--
		st.forgottenThrough = max(st.forgottenThrough, svc.lastIndex)
		if n := f.notifiers[e.name]; n != nil {
			n.wake()
		}
	}
	// Stale entries pile up when services flap; rebuild the queue when they dominate.
	if len(st.emptyQueue) > 2*f.cfg.MaxEmptyServices+64 {
		st.rebuildEmptyQueue()
	}
}

// rebuildEmptyQueue rebuilds the queue from the services, oldest-empty first.
// The order depends only on replicated state, so every node agrees.
func (st *state) rebuildEmptyQueue() {
	q := st.emptyQueue[:0]
	for _, svc := range st.services {
		if svc.emptySince != 0 {
			q = append(q, emptyEntry{svc.name, svc.emptySince})
		}
	}
	slices.SortFunc(q, func(a, b emptyEntry) int { return cmpUint(a.since, b.since) })
	st.emptyQueue = q
	st.emptyCount = len(q)
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// AppliedIndex returns the index of the last entry applied.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.applied
}

// WaitApplied waits until the FSM has applied index, or ctx ends.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.mu.RLock()
		applied, ch := f.st.applied, f.appliedCh
		f.mu.RUnlock()
		if applied >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("node has applied index %d, not yet %d: %w", applied, index, codes.ErrStaleNode)
		}
	}
}

// Get returns one instance, or nil.
func (f *FSM) Get(name, addr string) *Instance {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if svc := f.st.services[name]; svc != nil {
		return svc.instances[addr]
	}
	return nil
}

// List returns the instances of a service that carry every attribute in
// filter, oldest registration first, and the index the state is at.
func (f *FSM) List(name string, filter map[string]string) (uint64, []*Instance) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*Instance
	if svc := f.st.services[name]; svc != nil {
		out = make([]*Instance, 0, len(svc.instances))
		for _, in := range svc.instances {
			if Matches(in.Attrs, filter) {
				out = append(out, in)
			}
		}
	}
	sortInstances(out)
	return f.st.applied, out
}

// Matches reports whether attrs carries every key=value of filter.
func Matches(attrs, filter map[string]string) bool {
	for k, v := range filter {
		if got, ok := attrs[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func sortInstances(s []*Instance) {
	slices.SortFunc(s, func(a, b *Instance) int { return cmpUint(a.CreateIndex, b.CreateIndex) })
}

// WithInstances calls fn with every instance while holding the FSM's read
// lock, so no entry is applied (and no Observer call made) until fn returns.
// The TTL tracker uses it to load every instance and start observing changes
// in one atomic step. fn must not call back into the FSM.
func (f *FSM) WithInstances(fn func(applied uint64, all iter.Seq[*Instance])) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.st.applied, func(yield func(*Instance) bool) {
		for _, svc := range f.st.services {
			for _, in := range svc.instances {
				if !yield(in) {
					return
				}
			}
		}
	})
}

// Stats are counts for status and metrics.
type Stats struct {
	Services  int
	Instances int
	Applied   uint64
	Watchers  int
}

// Stats returns current counts.
func (f *FSM) Stats() Stats {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := Stats{Services: len(f.st.services), Applied: f.st.applied}
	for _, svc := range f.st.services {
		s.Instances += len(svc.instances)
	}
	for _, n := range f.notifiers {
		s.Watchers += n.refs
	}
	return s
}

// voterIDs returns the sorted ids of the voters of an encoded Raft
// configuration (nil if it does not decode: only Raft writes these entries).
func voterIDs(data []byte) (ids []string) {
	defer func() {
		if recover() != nil {
			ids = nil
		}
	}()
	for _, s := range raft.DecodeConfiguration(data).Servers {
		if s.Suffrage == raft.Voter {
			ids = append(ids, string(s.ID))
		}
	}
	slices.Sort(ids)
	return ids
}
