package main

import (
	"context"
	"fmt"
	"time"

	"github.com/miekg/dns"
)

// The dns workload (README.md, "curl, dig and friends"; run only when
// named: go run ./test/bench -systems discoverd -workloads dns): A queries
// per second over UDP against one node's -dns-addr, from several
// concurrent clients, each with a socket of its own, for a service of 10
// instances. Every answer is checked to hold the 10 records.

const dnsInstances = 10

func (b *bench) dns(ctx context.Context, sys string, cl cluster) error {
	dc, ok := cl.(*discoverdCluster)
	if !ok {
		b.logf("[%s] dns: measured for discoverd only", sys)
		return nil
	}
	dur := 10 * time.Second
	if b.quick {
		dur = 3 * time.Second
	}
	clients, err := newClients(ctx, cl, 1, false)
	if err != nil {
		return err
	}
	defer closeClients(clients)
	for i := range dnsInstances {
		in := &instance{service: "dnsweb", addr: addrOf(i + 1), ttl: time.Hour}
		if err := clients[0].register(ctx, in, 0); err != nil {
			return err
		}
	}
	if err := dc.waitApplied(ctx, "dnsweb", dnsInstances); err != nil {
		return err
	}
	addr := dc.dns[0]
	for _, C := range []int{1, 4, 16} {
		conns := make([]*dns.Conn, C)
		for w := range conns {
			c, err := dns.DialTimeout("udp", addr, opTimeout)
			if err != nil {
				return err
			}
			defer c.Close()
			conns[w] = c
		}
		cpu := startCPU(cl.procs()[:1])
		lat, _, elapsed := timedLoop(ctx, C, dur, func(octx context.Context, w, i int) (int, error) {
			m := new(dns.Msg)
			m.SetQuestion("dnsweb.service.discoverd.", dns.TypeA)
			c := conns[w]
			deadline, _ := octx.Deadline()
			_ = c.SetDeadline(deadline)
			if err := c.WriteMsg(m); err != nil {
				return 0, err
			}
			r, err := c.ReadMsg()
			if err != nil {
				return 0, err
			}
			if r.Id != m.Id || r.Rcode != dns.RcodeSuccess || len(r.Answer) != dnsInstances {
				return 0, fmt.Errorf("answer %s with %d records, want NOERROR with %d", dns.RcodeToString[r.Rcode], len(r.Answer), dnsInstances)
			}
			return 1, nil
		})
		if err := ctx.Err(); err != nil {
			return err
		}
		s := lat.summary()
		if s.n == 0 {
			return fmt.Errorf("dns C=%d: no query answered", C)
		}
		row := newRow("dns", C, sys, float64(s.n)/elapsed.Seconds(), s)
		row.Extra["ops"] = s.n
		row.Extra["seconds"] = round2(elapsed.Seconds())
		each, _ := cpu.pct()
		row.Extra["node_cpu_pct"], row.Extra["client_cpu_pct"] = each, cpu.clientPct()
		b.add(row)
		b.logf("[%s] dns C=%d: %d A queries (%d records each) over UDP to one node in %.1fs = %.0f queries/s, %v; CPU %% of a core: node %v, clients %v",
			sys, C, s.n, dnsInstances, elapsed.Seconds(), row.OpsPerS, s, each, row.Extra["client_cpu_pct"])
	}
	return nil
}
