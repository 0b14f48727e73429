package fsm

import (
	"github.com/discoverd/discoverd/internal/codes"
)

// Meta is a service's metadata: one blob that the service's instances (or
// anyone) coordinate through, e.g. a database primary's configuration, and
// the index of the write that set it. Stored metadata is immutable, like an
// Instance: a write stores a new *Meta.
//
// Metadata belongs to the service, not to an instance: removing the last
// instance leaves it, and only a delete-meta command removes it. A service
// with metadata is never forgotten as empty (evictEmptyLocked).
type Meta struct {
	Data  []byte
	Index uint64 // index of the set-meta command that set it
}

// metaIndexLocked returns the index of the service's metadata, 0 if it has
// none. Lock must be held.
func (f *FSM) metaIndexLocked(name string) uint64 {
	if svc := f.st.services[name]; svc != nil && svc.meta != nil {
		return svc.meta.Index
	}
	return 0
}

// setMetaLocked applies a set-meta command: a compare-and-set on the
// metadata's index. Lock must be held.
func (f *FSM) setMetaLocked(index uint64, c *SetMetaCommand) *Result {
	if r, ok := f.st.requests.get(c.RequestID); ok {
		return r
	}
	r := &Result{Index: index}
	if cur := f.metaIndexLocked(c.Name); cur != c.ExpectIndex {
		if c.ExpectIndex == 0 {
			r.Err = codes.Conflict(cur, "set metadata of %s only if it has none", c.Name)
		} else {
			r.Err = codes.Conflict(cur, "set metadata of %s expecting index %d", c.Name, c.ExpectIndex)
		}
	} else {
		svc := f.serviceLocked(c.Name, true)
		m := &Meta{Data: c.Data, Index: index}
		svc.meta = m
		f.markNotEmptyLocked(svc)
		f.recordLocked(svc, Event{Kind: EventMeta, Index: index, Name: svc.name, Meta: m})
		r.Changed = true
	}
	f.st.requests.put(c.RequestID, r)
	return r
}

// deleteMetaLocked applies a delete-meta command. Lock must be held.
func (f *FSM) deleteMetaLocked(index uint64, c *DeleteMetaCommand) *Result {
	if r, ok := f.st.requests.get(c.RequestID); ok {
		return r
	}
	r := &Result{Index: index}
	cur := f.metaIndexLocked(c.Name)
	switch {
	case c.ExpectIndex != 0 && cur != c.ExpectIndex:
		r.Err = codes.Conflict(cur, "delete metadata of %s expecting index %d", c.Name, c.ExpectIndex)
	case cur == 0:
		r.Err = codes.Errorf(codes.ErrNotFound, "delete metadata of %s: the service has no metadata", c.Name)
	default:
		svc := f.st.services[c.Name]
		svc.meta = nil
		f.recordLocked(svc, Event{Kind: EventMeta, Index: index, Name: svc.name})
		f.markEmptyLocked(svc, index)
		r.Changed = true
	}
	f.st.requests.put(c.RequestID, r)
	return r
}

// GetMeta returns a service's metadata (nil if it has none) and the index
// the state is at.
func (f *FSM) GetMeta(name string) (uint64, *Meta) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var m *Meta
	if svc := f.st.services[name]; svc != nil {
		m = svc.meta
	}
	return f.st.applied, m
}
