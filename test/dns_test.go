package test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
)

// The DNS listener (-dns-addr) of real `discoverd server` processes,
// queried with the real `dig` (dnsutils; .ci/run installs it): records
// from every node, the zone's answers, truncation to TCP, the read gate,
// and hostile input while the native port keeps serving (docs/dns.md).

// digBin returns the path of dig, failing the test if it is missing.
func digBin(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("dig")
	if err != nil {
		t.Fatalf("dig not found: install dnsutils (apt-get install dnsutils; .ci/run does it): %v", err)
	}
	return p
}

// dig runs dig against addr with args and returns its output.
func dig(t *testing.T, addr string, args ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all := append([]string{"@" + host, "-p", port, "+time=2", "+tries=1"}, args...)
	out, err := exec.CommandContext(ctx, digBin(t), all...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s", strings.Join(all, " "), err, out)
	}
	return string(out)
}

// shortLines is dig +short's output as sorted lines.
func shortLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	slices.Sort(lines)
	return lines
}

// dnsCluster starts a 3-node cluster whose nodes answer DNS too, waits
// until it has a leader every node knows, and returns it, each node's DNS
// address by id and the nodes' addresses (-servers).
func (h *harness) dnsCluster() (*cluster, map[string]string, string) {
	h.t.Helper()
	ports := freePorts(h.t, 3)
	dnsAddr := map[string]string{}
	for i := range 3 {
		dnsAddr[fmt.Sprintf("n%d", i+1)] = fmt.Sprintf("127.0.0.1:%d", ports[i])
	}
	c := h.startClusterWith(3, func(nd *node) []string {
		return []string{"-dns-addr", dnsAddr[nd.id], "-dns-ttl", "3s"}
	})
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	return c, dnsAddr, c.servers()
}

func TestDNS_DigAgainstACluster(t *testing.T) {
	h := newHarness(t)
	c, dnsAddr, all := h.dnsCluster()
	for _, r := range [][]string{{"web", "10.0.0.1:80", "zone=a"}, {"web", "10.0.0.2:81", "zone=b"},
		{"web", "[2001:db8::1]:82", "zone=a"}, {"web", "db.example.com:83", "zone=a"}} {
		h.start("register-"+r[1], append([]string{"register", "-servers", all, "-ttl", "5s"}, r...)...)
	}
	h.waitServices(all, "web", func(ins []instance) bool { return len(ins) == 4 }, "4 instances of web")
	want := []string{"10.0.0.1", "10.0.0.2"}
	for _, id := range c.ids() { // every node answers from its own state
		poll(t, 10*time.Second, 50*time.Millisecond, id+" to answer web's A records", func() (bool, string) {
			got := shortLines(dig(t, dnsAddr[id], "+short", "web.service.discoverd", "A"))
			return slices.Equal(got, want), fmt.Sprint(got)
		})
	}
	a := dnsAddr["n1"]
	if got := shortLines(dig(t, a, "+short", "web.service.discoverd", "AAAA")); !slices.Equal(got, []string{"2001:db8::1"}) {
		t.Errorf("AAAA: %v", got)
	}
	wantSRV := []string{"1 1 80 0a000001.addr.discoverd.", "1 1 81 0a000002.addr.discoverd.",
		"1 1 82 20010db8000000000000000000000001.addr.discoverd.", "1 1 83 db.example.com."}
	for _, name := range []string{"_web._tcp.service.discoverd", "web.service.discoverd"} {
		if got := shortLines(dig(t, a, "+short", name, "SRV")); !slices.Equal(got, wantSRV) {
			t.Errorf("SRV %s: %v, want %v", name, got, wantSRV)
		}
	}
	out := dig(t, a, "_web._tcp.service.discoverd", "SRV")
	for _, s := range []string{"status: NOERROR", "flags: qr aa rd;", "ADDITIONAL SECTION:", "0a000001.addr.discoverd. 3\tIN\tA\t10.0.0.1"} {
		if !strings.Contains(out, s) {
			t.Errorf("dig SRV output lacks %q:\n%s", s, out)
		}
	}
	if got := shortLines(dig(t, a, "+short", "a.zone.web.attr.discoverd")); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Errorf("filter zone=a: %v", got)
	}
	for name, status := range map[string]string{"nope.service.discoverd": "NXDOMAIN", "example.com": "REFUSED",
		"c.zone.web.attr.discoverd": "NOERROR"} {
		out := dig(t, a, name)
		if !strings.Contains(out, "status: "+status) || strings.Contains(out, "ANSWER SECTION") {
			t.Errorf("%s: want %s and no answer:\n%s", name, status, out)
		}
	}
	if out := dig(t, a, "+tcp", "+short", "web.service.discoverd"); len(shortLines(out)) != 2 {
		t.Errorf("over TCP: %q", out)
	}
}

func TestDNS_TruncatesToTCPWith200Instances(t *testing.T) {
	h := newHarness(t)
	_, dnsAddr, all := h.dnsCluster()
	cl, err := client.New(strings.Split(all, ",")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			errs <- cl.RegisterAddr(ctx, "big", fmt.Sprintf("10.2.%d.%d:%d", i/200, i%200+1, 2000+i), nil, 10*time.Second)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	a := dnsAddr["n2"]
	poll(t, 10*time.Second, 50*time.Millisecond, "n2 to hold 200 instances", func() (bool, string) {
		n := len(shortLines(dig(t, a, "+tcp", "+short", "big.service.discoverd")))
		return n == 200, fmt.Sprint(n, " records")
	})
	// Over UDP the answer is truncated (dig would retry over TCP; +ignore
	// shows the truncated answer), at 512 bytes without EDNS0 and at the
	// EDNS0 size otherwise.
	for _, args := range [][]string{{"+noedns"}, {"+bufsize=1232"}} {
		out := dig(t, a, append(args, "+ignore", "big.service.discoverd", "SRV")...)
		if !strings.Contains(out, "flags: qr aa tc") {
			t.Errorf("UDP %v: not truncated:\n%s", args, out)
		}
	}
	if out := dig(t, a, "big.service.discoverd", "SRV"); !strings.Contains(out, "ANSWER: 200, AUTHORITY: 0, ADDITIONAL: 201") {
		t.Errorf("SRV after the retry over TCP: want 200 answers and their 200 addresses (and the OPT record):\n%s", out[:min(len(out), 600)])
	}
}

func TestDNS_NotCaughtUpAnswersServfail(t *testing.T) {
	h := newHarness(t)
	c, dnsAddr, all := h.dnsCluster()
	h.start("register", "register", "-servers", all, "-ttl", "5s", "web", "10.0.0.1:80")
	a := dnsAddr["n1"]
	poll(t, 10*time.Second, 50*time.Millisecond, "n1 to answer web", func() (bool, string) {
		out := dig(t, a, "+short", "web.service.discoverd")
		return strings.TrimSpace(out) == "10.0.0.1", out
	})
	// n1 restarted alone knows no leader: it has not caught up since it
	// started, so it answers SERVFAIL — not NXDOMAIN, nor an empty answer.
	for _, id := range c.ids() {
		c.node(id).p.kill9(t)
	}
	c.startNode(c.node("n1"))
	poll(t, 15*time.Second, 100*time.Millisecond, "restarted n1 to answer DNS", func() (bool, string) {
		conn, err := net.DialTimeout("tcp", a, time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil, fmt.Sprint(err)
	})
	for range 3 {
		if out := dig(t, a, "web.service.discoverd"); !strings.Contains(out, "status: SERVFAIL") {
			t.Fatalf("a node that has not caught up: want SERVFAIL:\n%s", out)
		}
	}
}

func TestDNS_HostileInputLeavesTheNodeServing(t *testing.T) {
	h := newHarness(t)
	c, dnsAddr, all := h.dnsCluster()
	h.start("register", "register", "-servers", all, "-ttl", "5s", "web", "10.0.0.1:80")
	h.waitServices(all, "web", func(ins []instance) bool { return len(ins) == 1 }, "web registered")
	a := dnsAddr["n1"]
	uc, err := net.Dial("udp", a)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	for i := range 2000 {
		p := make([]byte, 1+i%1500)
		for j := range p {
			p[j] = byte(i * j)
		}
		_, _ = uc.Write(p)
	}
	_, _ = uc.Write(make([]byte, 65000))
	var conns []net.Conn // over the default cap of 64
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 150 {
		cn, err := net.Dial("tcp", a)
		if err != nil {
			continue
		}
		conns = append(conns, cn)
		if i%3 == 0 {
			_, _ = cn.Write([]byte{0xff, 0xff, 0, 0, 1})
		}
	}
	// The native port and DNS over UDP keep serving meanwhile.
	h.waitServices(c.node("n1").addr, "web", func(ins []instance) bool { return len(ins) == 1 }, "web on n1's native port")
	if out := dig(t, a, "+short", "web.service.discoverd"); strings.TrimSpace(out) != "10.0.0.1" {
		t.Fatalf("dig during the attack: %q", out)
	}
	for _, cn := range conns {
		cn.Close()
	}
	poll(t, 10*time.Second, 100*time.Millisecond, "DNS over TCP again", func() (bool, string) {
		out, err := exec.Command(digBin(t), "@127.0.0.1", "-p", strings.Split(a, ":")[1], "+tcp", "+short", "+time=1", "+tries=1", "web.service.discoverd").CombinedOutput()
		return err == nil && strings.TrimSpace(string(out)) == "10.0.0.1", string(out)
	})
}
