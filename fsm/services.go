package fsm

import (
	"slices"
	"strings"
)

// ServiceCount is one service and how many instances it has.
type ServiceCount struct {
	Name      string
	Instances int
}

// Services returns every service that has at least one instance, sorted by
// name, with its number of instances, and the index the state is at.
// Services kept only for their history (no instances left) are not listed.
func (f *FSM) Services() (uint64, []ServiceCount) {
	f.mu.RLock()
	out := make([]ServiceCount, 0, len(f.st.services))
	for name, svc := range f.st.services {
		if n := len(svc.instances); n > 0 {
			out = append(out, ServiceCount{Name: name, Instances: n})
		}
	}
	applied := f.st.applied
	f.mu.RUnlock()
	slices.SortFunc(out, func(a, b ServiceCount) int { return strings.Compare(a.Name, b.Name) })
	return applied, out
}
