package fsm

import "github.com/discoverd/discoverd/internal/codes"

// requestTable remembers the results of the most recent write request ids, so
// a write retried after a lost answer (same id, possibly through another node)
// is applied once and answered with the first result. It is replicated state:
// every node evicts in the same order, by count, never by time.
type requestTable struct {
	limit   int
	results map[string]*Result
	order   []string // ring of ids, oldest at head
	head    int
}

func newRequestTable(limit int) *requestTable {
	return &requestTable{limit: limit, results: map[string]*Result{}}
}

func (t *requestTable) get(id string) (*Result, bool) {
	if id == "" {
		return nil, false
	}
	r, ok := t.results[id]
	return r, ok
}

func (t *requestTable) put(id string, r *Result) {
	if id == "" {
		return
	}
	if _, ok := t.results[id]; ok {
		return
	}
	if len(t.order) < t.limit {
		t.order = append(t.order, id)
	} else {
		delete(t.results, t.order[t.head])
		t.order[t.head] = id
		t.head = (t.head + 1) % t.limit
	}
	t.results[id] = r
}

// ordered returns the ids oldest first with their results, for snapshots.
func (t *requestTable) ordered() []snapshotRequest {
	out := make([]snapshotRequest, 0, len(t.order))
	for i := range t.order {
		id := t.order[(t.head+i)%len(t.order)]
		r := t.results[id]
		sr := snapshotRequest{ID: id, Index: r.Index, Changed: r.Changed}
		if r.Err != nil {
			sr.Code, sr.Error = string(codes.Of(r.Err)), r.Err.Error()
			sr.ConflictIndex, _ = codes.ConflictIndex(r.Err)
		}
		out = append(out, sr)
	}
	return out
}
