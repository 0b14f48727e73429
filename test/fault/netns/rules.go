package netns

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// tableName is the nftables table that holds the fault rules in every node
// namespace.
const tableName = "discoverd_fault"

// link is a directed link between two nodes.
type link struct{ from, to int }

// Cut drops every packet from node `from` to node `to` (one way). It is
// idempotent. The packets are dropped on arrival, by the input chain of `to`
// (ip saddr IP(from)), so the sender sees nothing: no error, no reset, just
// silence. Note that a one-way cut breaks TCP both ways: a connection needs
// packets in both directions, so after Cut(0, 1) neither 0 → 1 nor 1 → 0 can
// connect, although 1 → 0 packets still arrive.
func (nt *Net) Cut(from, to int) error {
	return nt.update(func(c map[link]bool) error {
		if err := nt.pair(from, to); err != nil {
			return err
		}
		c[link{from, to}] = true
		return nil
	})
}

// Heal undoes Cut(from, to). It is idempotent.
func (nt *Net) Heal(from, to int) error {
	return nt.update(func(c map[link]bool) error {
		if err := nt.pair(from, to); err != nil {
			return err
		}
		delete(c, link{from, to})
		return nil
	})
}

// Isolate cuts node i from every other node in both directions, on top of
// the cuts already in place. The host is not cut: the test process (clients,
// the harness) still reaches node i at IP(i) and node i still reaches
// HostIP(). To make a node unreachable to clients too, stop sending them to
// it, or pause the process.
func (nt *Net) Isolate(i int) error {
	return nt.update(func(c map[link]bool) error {
		if i < 0 || i >= nt.n {
			return fmt.Errorf("netns: node %d out of range 0..%d", i, nt.n-1)
		}
		for j := 0; j < nt.n; j++ {
			if j != i {
				c[link{i, j}] = true
				c[link{j, i}] = true
			}
		}
		return nil
	})
}

// Partition replaces every current cut with a partition into groups: nodes in
// the same group talk, nodes in different groups are cut both ways. A node
// listed in no group forms a group of its own (it is isolated from every
// other node). A node listed twice, or out of range, is an error and changes
// nothing. Partition() and Partition(all nodes) heal everything. As with
// Isolate, the host stays connected to every node.
func (nt *Net) Partition(groups ...[]int) error {
	group := make([]int, nt.n)
	for i := range group {
		group[i] = -1
	}
	for g, members := range groups {
		for _, i := range members {
			if i < 0 || i >= nt.n {
				return fmt.Errorf("netns: node %d out of range 0..%d", i, nt.n-1)
			}
			if group[i] >= 0 {
				return fmt.Errorf("netns: node %d is in more than one group", i)
			}
			group[i] = g
		}
	}
	next := len(groups)
	for i := range group {
		if group[i] < 0 {
			group[i] = next
			next++
		}
	}
	return nt.update(func(c map[link]bool) error {
		clear(c)
		for i := 0; i < nt.n; i++ {
			for j := 0; j < nt.n; j++ {
				if group[i] != group[j] {
					c[link{i, j}] = true
				}
			}
		}
		return nil
	})
}

// HealAll removes every cut.
func (nt *Net) HealAll() error {
	return nt.update(func(c map[link]bool) error {
		clear(c)
		return nil
	})
}

// IsCut reports whether packets from `from` to `to` are currently dropped.
func (nt *Net) IsCut(from, to int) bool {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	return nt.cuts[link{from, to}]
}

// Cuts returns the directed links currently cut, sorted.
func (nt *Net) Cuts() [][2]int {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	out := make([][2]int, 0, len(nt.cuts))
	for l := range nt.cuts {
		out = append(out, [2]int{l.from, l.to})
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a][0] != out[b][0] {
			return out[a][0] < out[b][0]
		}
		return out[a][1] < out[b][1]
	})
	return out
}

func (nt *Net) pair(from, to int) error {
	if from < 0 || from >= nt.n || to < 0 || to >= nt.n {
		return fmt.Errorf("netns: link %d->%d out of range 0..%d", from, to, nt.n-1)
	}
	if from == to {
		return fmt.Errorf("netns: cannot cut node %d from itself", from)
	}
	return nil
}

// update changes the Go-side cut set with change and then rebuilds the rules
// of every node namespace whose input set changed, plus any left dirty by an
// earlier failure. The Go-side set is the truth; each namespace's chain is
// flushed and rebuilt from it in one nft transaction, so there are no rule
// handles to track and no half-applied state inside a namespace.
func (nt *Net) update(change func(map[link]bool) error) error {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if nt.closed {
		return ErrClosed
	}
	before := make([]string, nt.n)
	for i := range before {
		before[i] = strings.Join(nt.dropFromLocked(i), ",")
	}
	if err := change(nt.cuts); err != nil {
		return err
	}
	var errs []error
	for i := 0; i < nt.n; i++ {
		if !nt.dirty[i] && strings.Join(nt.dropFromLocked(i), ",") == before[i] {
			continue
		}
		if err := nt.applyLocked(i); err != nil {
			nt.dirty[i] = true
			errs = append(errs, err)
			continue
		}
		delete(nt.dirty, i)
	}
	return errors.Join(errs...)
}

// dropFromLocked lists, in node order, the IPs whose packets node i drops.
// Lock should be held.
func (nt *Net) dropFromLocked(i int) []string {
	var from []string
	for j := 0; j < nt.n; j++ {
		if nt.cuts[link{j, i}] {
			from = append(from, nt.IP(j))
		}
	}
	return from
}

// applyLocked rebuilds node i's fault table from the cut set. Lock should be
// held.
func (nt *Net) applyLocked(i int) error {
	return nt.apply(i, nt.dropFromLocked(i))
}

// applyNft replaces node i's fault table with one that drops dropFrom.
func (nt *Net) applyNft(i int, dropFrom []string) error {
	return runIn(nt.Namespace(i), nftScript(dropFrom), "nft", "-f", "-")
}

// nftScript is the whole fault table of one node namespace, applied as one
// atomic nft transaction: ensure the table exists, flush it, declare both
// chains and the drop rule for the given sources.
//
// Only the input chain carries rules: dropping on arrival is what a lossy
// network does, and the sender's stack sees nothing. Dropping in the sender's
// output hook instead would surface as EPERM to a UDP sender. The output
// chain is declared (empty) so that rules on locally generated traffic, if
// ever needed, have a place.
func nftScript(dropFrom []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {}\n", tableName)
	fmt.Fprintf(&b, "flush table inet %s\n", tableName)
	fmt.Fprintf(&b, "table inet %s {\n", tableName)
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n")
	if len(dropFrom) > 0 {
		fmt.Fprintf(&b, "\t\tip saddr { %s } counter drop\n", strings.Join(dropFrom, ", "))
	}
	b.WriteString("\t}\n")
	b.WriteString("\tchain output {\n\t\ttype filter hook output priority 0; policy accept;\n\t}\n")
	b.WriteString("}\n")
	return b.String()
}
