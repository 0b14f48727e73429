package main

import (
	"context"
	"fmt"
	"net"

	"github.com/discoverd/discoverd/internal/mux"
)

// The idle workload (README.md, "Benchmarks"): the heap an idle client
// connection costs a node — through the TLS handshake (discoverd-tls) and
// the protocol byte, then nothing.

const idleConns = 800 // under the default -max-conns-per-ip (1024), with the peers' own

func (b *bench) idle(ctx context.Context, sys string, cl cluster) error {
	dc, ok := cl.(*discoverdCluster)
	if !ok {
		b.logf("[%s] idle: measured for discoverd only", sys)
		return nil
	}
	before, err := dc.heapInuse(ctx, 0)
	if err != nil {
		return err
	}
	conns := make([]net.Conn, 0, idleConns)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range idleConns {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var cfg = dc.tlsFor(dc.addrs[0])
		c, err := mux.Dial(dc.addrs[0], mux.ConnRPC, opTimeout, cfg)
		if err != nil {
			return fmt.Errorf("idle connection %d: %w", len(conns), err)
		}
		conns = append(conns, c)
	}
	after, err := dc.heapInuse(ctx, 0)
	if err != nil {
		return err
	}
	per := (float64(after) - float64(before)) / idleConns
	b.logf("[%s] idle: %d idle connections to one node: heap %d → %d bytes, %.0f B per connection", sys, idleConns, before, after, per)
	b.add(row{Workload: "idle", Clients: idleConns, System: sys, Extra: map[string]any{"heap_bytes_per_conn": per}})
	return nil
}
