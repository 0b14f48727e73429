package main

import (
	"slices"
	"testing"
)

// TestSpreadEvenly_NodesAndConnections: the watchers of a spread differ by
// one at most from node to node, no connection carries more than perConn
// (far under a connection's 1024 streams), and every node has as many
// connections.
func TestSpreadEvenly_NodesAndConnections(t *testing.T) {
	for _, nodes := range [][]int{{0, 1, 2}, {0, 1, 2, 3, 4}, {4}} {
		for _, nw := range []int{1, 7, 40, 1000, 10_000} {
			s := spreadEvenly(nw, nodes, 100)
			if s.conns%len(nodes) != 0 {
				t.Errorf("%d watchers over %v: %d connections, not a multiple of the nodes", nw, nodes, s.conns)
			}
			perNode := map[int]int{}
			perConn := make([]int, s.conns)
			connsOf := map[int]int{}
			for k := range s.conns {
				connsOf[s.home(k)]++
			}
			for j := range nw {
				perNode[s.node(j)]++
				perConn[j%s.conns]++
				if s.node(j) != s.home(j%s.conns) {
					t.Fatalf("watcher %d reads from node %d, its connection is on %d", j, s.node(j), s.home(j%s.conns))
				}
			}
			var counts []int
			for _, i := range nodes {
				counts = append(counts, perNode[i])
				if connsOf[i] != s.conns/len(nodes) {
					t.Errorf("%d watchers over %v: node %d has %d of %d connections", nw, nodes, i, connsOf[i], s.conns)
				}
			}
			if nw >= len(nodes) && slices.Max(counts)-slices.Min(counts) > 1 {
				t.Errorf("%d watchers over %v: per node %v, want equal within one", nw, nodes, counts)
			}
			if m := slices.Max(perConn); m > 100 {
				t.Errorf("%d watchers over %v: %d on one connection, want at most 100", nw, nodes, m)
			}
		}
	}
	// 10 000 watchers over 3 nodes: 34 connections a node, 102 in all.
	if s := spreadEvenly(10_000, []int{0, 1, 2}, 100); s.conns != 102 {
		t.Errorf("10 000 over 3 nodes: %d connections, want 102", s.conns)
	}
}

// TestWatchSpread_WatchWorkloadLayout: the watch workload keeps the layout
// of its earlier runs: watcher j on connection j mod 10, connection k on
// node k mod 3.
func TestWatchSpread_WatchWorkloadLayout(t *testing.T) {
	s := watchSpread{nodes: []int{0, 1, 2}, conns: 10}
	for j := range 1000 {
		if got, want := s.node(j), (j%10)%3; got != want {
			t.Fatalf("watcher %d on node %d, want %d", j, got, want)
		}
	}
}
