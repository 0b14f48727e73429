package fsm

import (
	"bufio"
	"fmt"
	"io"
	"slices"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/codes"
)

// Snapshot formats. Persist writes version 1 unless the state holds
// metadata, then version 2 (the same layout, with the services' Meta and
// meta events): a node older than metadata refuses a version 2 snapshot
// instead of restoring it without the metadata and diverging. Once ACLs are
// bootstrapped it writes version 3 (the same layout again, with the header's
// ACL section), which nodes older than ACLs refuse for the same reason.
// Restore reads all three, and refuses others; a snapshot without an ACL
// section restores as "not bootstrapped, no tokens".
const (
	snapshotVersion     = 1
	snapshotVersionMeta = 2
	snapshotVersionACL  = 3
)

// knownSnapshotVersion reports whether this node reads snapshot format v.
func knownSnapshotVersion(v int) bool {
	return v == snapshotVersion || v == snapshotVersionMeta || v == snapshotVersionACL
}

// A snapshot is a snapshotHeader followed by Header.Services snapshotService
// values, all msgpack, back to back.
type snapshotHeader struct {
	Version          int
	Applied          uint64
	ForgottenThrough uint64
	Services         int
	Requests         []snapshotRequest // oldest first
	// ACL is the ACL state (version 3); absent while ACLs are not
	// bootstrapped.
	ACL *snapshotACL `codec:",omitempty"`
}

type snapshotACL struct {
	BootstrapIndex uint64
	Index          uint64
	Tokens         []ACLToken // sorted by accessor id
}

type snapshotService struct {
	Name             string
	Instances        []*Instance
	History          []Event
	TruncatedThrough uint64
	LastIndex        uint64
	EmptySince       uint64
	Meta             *Meta `codec:",omitempty"` // version 2
}

type snapshotRequest struct {
	ID      string
	Index   uint64
	Changed bool
	Code    string
	Error   string
	// ConflictIndex is the current index a conflict carried (version 2).
	ConflictIndex uint64 `codec:",omitempty"`
}

// Snapshot takes a point-in-time view under the read lock; the slow part, the
// encoding, happens in Persist without the lock. Instances are immutable, so
// the view shares them instead of copying.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := f.st
	s := &fsmSnapshot{hdr: snapshotHeader{
		Version:          snapshotVersion,
		Applied:          st.applied,
		ForgottenThrough: st.forgottenThrough,
		Services:         len(st.services),
		Requests:         st.requests.ordered(),
	}}
	s.services = make([]snapshotService, 0, len(st.services))
	for _, svc := range st.services {
		ss := snapshotService{
			Name:             svc.name,
			Instances:        make([]*Instance, 0, len(svc.instances)),
			History:          svc.history.all(),
			TruncatedThrough: svc.history.truncatedThrough,
			LastIndex:        svc.lastIndex,
			EmptySince:       svc.emptySince,
			Meta:             svc.meta,
		}
		for _, in := range svc.instances {
			ss.Instances = append(ss.Instances, in)
		}
		if ss.Meta != nil || slices.ContainsFunc(ss.History, func(e Event) bool { return e.Kind == EventMeta }) {
			s.hdr.Version = snapshotVersionMeta
		}
		s.services = append(s.services, ss)
	}
	if slices.ContainsFunc(s.hdr.Requests, func(r snapshotRequest) bool { return r.Code == string(codes.CodeConflict) }) {
		s.hdr.Version = snapshotVersionMeta
	}
	if a := &st.acl; a.bootstrapIndex != 0 {
		// Records are immutable: the view shares them.
		sa := &snapshotACL{BootstrapIndex: a.bootstrapIndex, Index: a.index, Tokens: make([]ACLToken, 0, len(a.tokens))}
		for _, t := range a.sortedTokens() {
			sa.Tokens = append(sa.Tokens, *t)
		}
		s.hdr.ACL = sa
		s.hdr.Version = snapshotVersionACL
	}
	return s, nil
}

type fsmSnapshot struct {
	hdr      snapshotHeader
	services []snapshotService
}

// Persist writes the snapshot; on any error the sink is cancelled.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.writeTo(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) writeTo(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	enc := codec.NewEncoder(bw, codecHandle)
	if err := enc.Encode(&s.hdr); err != nil {
		return err
	}
	for i := range s.services {
		if err := enc.Encode(&s.services[i]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Release is a no-op: the snapshot holds no resources.
func (s *fsmSnapshot) Release() {}

// Restore replaces the whole state with a snapshot's. It builds the new state
// aside and swaps it in, then tells open watchers to resync and the observer
// that everything changed, and, once the lock is released, the OnACLChange
// listeners.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := f.readSnapshot(rc)
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	f.swapState(st)
	f.notifyACL()
	return nil
}

// swapState installs a restored state.
func (f *FSM) swapState(st *state) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = st
	f.aclVersion++ // the tokens may differ: Restore tells the listeners, after the unlock
	f.gen++
	for _, n := range f.notifiers {
		n.wake()
	}
	close(f.appliedCh)
	f.appliedCh = make(chan struct{})
	if f.observer != nil {
		f.observer.Restored()
	}
}

func (f *FSM) readSnapshot(r io.Reader) (*state, error) {
	dec := codec.NewDecoder(bufio.NewReaderSize(r, 256<<10), codecHandle)
	var hdr snapshotHeader
	if err := dec.Decode(&hdr); err != nil {
		return nil, fmt.Errorf("decode header: %w", err)
	}
	if !knownSnapshotVersion(hdr.Version) {
		return nil, fmt.Errorf("snapshot format version %d, this discoverd reads %d to %d", hdr.Version, snapshotVersion, snapshotVersionACL)
	}
	st := newState(f.cfg)
	st.applied = hdr.Applied
	st.forgottenThrough = hdr.ForgottenThrough
	for _, r := range hdr.Requests {
		st.requests.put(r.ID, &Result{Index: r.Index, Changed: r.Changed, Err: codes.FromWireIndex(codes.Code(r.Code), r.Error, r.ConflictIndex)})
	}
	if a := hdr.ACL; a != nil {
		st.acl.bootstrapIndex, st.acl.index = a.BootstrapIndex, a.Index
		for i := range a.Tokens {
			t := a.Tokens[i]
			st.acl.tokens[t.AccessorID] = &t
		}
	}
	for i := 0; i < hdr.Services; i++ {
		var ss snapshotService
		if err := dec.Decode(&ss); err != nil {
			return nil, fmt.Errorf("decode service %d of %d: %w", i+1, hdr.Services, err)
		}
		svc := f.newService(ss.Name)
		for _, in := range ss.Instances {
			svc.instances[in.Addr] = in
		}
		for _, e := range ss.History {
			svc.history.push(e)
		}
		svc.history.truncatedThrough = max(svc.history.truncatedThrough, ss.TruncatedThrough)
		svc.lastIndex = ss.LastIndex
		svc.emptySince = ss.EmptySince
		svc.meta = ss.Meta
		st.services[ss.Name] = svc
	}
	st.rebuildEmptyQueue()
	return st, nil
}
