package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"slices"
)

// Hash returns the index of the last applied entry and a SHA-256 of the
// replicated state: every service with its instances, metadata, history and
// bookkeeping, the request-id table, forgottenThrough and the ACL tokens,
// in a canonical order. Replicas that applied the same log up to the same
// index have the same hash; the fault suite compares them. It walks the whole state under
// the read lock, so it is for checks, not for hot paths.
func (f *FSM) Hash() (uint64, string) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := f.st
	h := sha256.New()
	u := func(v uint64) {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	s := func(v string) { u(uint64(len(v))); h.Write([]byte(v)) }
	u(st.forgottenThrough)
	names := make([]string, 0, len(st.services))
	for n := range st.services {
		names = append(names, n)
	}
	slices.Sort(names)
	u(uint64(len(names)))
	for _, n := range names {
		svc := st.services[n]
		s(n)
		u(svc.lastIndex)
		u(svc.emptySince)
		u(svc.history.truncatedThrough)
		addrs := make([]string, 0, len(svc.instances))
		for a := range svc.instances {
			addrs = append(addrs, a)
		}
		slices.Sort(addrs)
		u(uint64(len(addrs)))
		for _, a := range addrs {
			hashInstance(h, s, u, svc.instances[a])
		}
		hashMeta(s, u, svc.meta)
		u(uint64(svc.history.n))
		for i := 0; i < svc.history.n; i++ {
			e := svc.history.at(i)
			u(uint64(e.Kind))
			u(e.Index)
			u(uint64(e.Reason))
			hashInstance(h, s, u, e.Instance)
			hashMeta(s, u, e.Meta)
		}
	}
	reqs := st.requests.ordered()
	u(uint64(len(reqs)))
	for _, r := range reqs {
		s(r.ID)
		u(r.Index)
		if r.Changed {
			u(1)
		} else {
			u(0)
		}
		s(r.Code)
		u(r.ConflictIndex)
	}
	// The ACL state, once bootstrapped (before, there is none, and the hash
	// is what it was before ACLs existed).
	if a := &st.acl; a.bootstrapIndex != 0 {
		u(a.bootstrapIndex)
		u(a.index)
		toks := a.sortedTokens()
		u(uint64(len(toks)))
		for _, t := range toks {
			s(t.AccessorID)
			s(string(t.SecretHash))
			s(t.Description)
			u(uint64(len(t.Rules)))
			for _, r := range t.Rules {
				s(r)
			}
			u(uint64(t.ExpiresAt))
			u(t.CreateIndex)
			u(t.ModifyIndex)
		}
	}
	return st.applied, hex.EncodeToString(h.Sum(nil))
}

func hashMeta(s func(string), u func(uint64), m *Meta) {
	if m == nil {
		u(0)
		return
	}
	u(1)
	u(m.Index)
	s(string(m.Data))
}

func hashInstance(h hash.Hash, s func(string), u func(uint64), in *Instance) {
	if in == nil {
		u(0)
		return
	}
	u(1)
	s(in.Name)
	s(in.Addr)
	u(uint64(in.TTL))
	u(in.CreateIndex)
	u(in.ModifyIndex)
	if in.Suspect {
		u(1)
	} else {
		u(0)
	}
	keys := make([]string, 0, len(in.Attrs))
	for k := range in.Attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	u(uint64(len(keys)))
	for _, k := range keys {
		s(k)
		s(in.Attrs[k])
	}
}
