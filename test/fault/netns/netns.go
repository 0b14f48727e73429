// Package netns is the root-only partition backend of discoverd's fault suite.
//
// Each discoverd node runs in its own Linux network namespace with its own IP
// address. The node namespaces are wired to one Linux bridge that lives in a
// namespace of its own, and the host (root) namespace has one more leg into
// the bridge, so the test process, its clients and its harness reach every
// node directly at Net.IP(i) without any proxy:
//
//	root ns: <host veth> 10.X.Y.254 ──┐
//	<prefix>-n0: eth0 10.X.Y.1 ───────┤
//	<prefix>-n1: eth0 10.X.Y.2 ───────┼── br0 in <prefix>-br
//	...                               │
//
// Partitions are nftables drop rules inside the node namespaces (table
// "inet discoverd_fault"). A dropped packet vanishes silently: an established
// TCP connection stalls while cut and resumes on heal, and a new connection
// times out instead of being refused — the way a real network partition
// behaves, unlike the in-process transport.
//
// The proxy backend (no root) is the default; this backend is the one that
// needs no cooperation from discoverd (no address overrides) and cuts every
// kind of traffic, including node→leader forwarding. See DESIGN.md.
package netns

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// Sentinel errors.
var (
	// ErrInUse is returned by New when a namespace of the requested prefix
	// exists and is owned by a live process (possibly this one).
	ErrInUse = errors.New("netns: namespace in use by a live owner")
	// ErrClosed is returned by fault methods called after Close.
	ErrClosed = errors.New("netns: net is closed")
	// ErrNoSubnet is returned by New when every candidate /24 clashes with a
	// route of the host.
	ErrNoSubnet = errors.New("netns: no free 10.x.y.0/24 subnet")
)

const (
	// netnsDir is where `ip netns` keeps its named namespaces.
	netnsDir = "/run/netns"
	// ownerDir holds one <namespace>.owner file per namespace this package
	// created; it records which process owns the namespace.
	ownerDir = "/run/discoverd-netns"
	// hostOctet is the last octet of the host's address in the bridge subnet.
	hostOctet = 254
	// maxNodes keeps node addresses .1 .. .maxNodes clear of the host's .254.
	maxNodes = 250
	// bridgeName is the bridge inside the bridge namespace (names there are
	// private to that namespace, so they need no prefix).
	bridgeName = "br0"
	// nodeIfName is the node's interface name inside its own namespace.
	nodeIfName = "eth0"
)

// validPrefix keeps names safe as file names, namespace names and in
// `ip`/`nft` arguments.
var validPrefix = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$`)

// Net is a set of node namespaces joined by a bridge. Its methods are safe for
// concurrent use.
type Net struct {
	prefix   string
	n        int
	subnet   [2]byte // 10.subnet[0].subnet[1].0/24
	hostLink string  // the host (root namespace) end of the host veth

	mu     sync.Mutex // guards the fields below; held while nft runs so the kernel sees changes in order
	closed bool
	cuts   map[link]bool // directed links currently cut
	dirty  map[int]bool  // node namespaces whose rules may not match cuts (last rebuild failed)

	// apply installs the drop rules of node i (the IPs whose packets it
	// drops). It is nt.applyNft except in unit tests of the cut logic.
	apply func(i int, dropFrom []string) error
}

// New creates namespaces for n nodes: "<prefix>-n0".."<prefix>-n{n-1}", and a
// bridge namespace "<prefix>-br" holding a Linux bridge. Node i gets IP(i) on
// a veth into the bridge and its loopback up; the host namespace gets
// HostIP() on a veth into the bridge. No fault is active.
//
// Before creating anything, New deletes stale namespaces, owner files and host
// links left by dead processes whose prefixes share this prefix's base (the
// part before the first '-': "dsc" for "dsc-1234"). Use a per-run prefix such
// as fmt.Sprintf("dsc-%d", os.Getpid()).
//
// New needs root and the `ip` and `nft` programs; Available says whether they
// are there. On error nothing of this prefix is left behind.
func New(prefix string, n int) (*Net, error) {
	if !validPrefix.MatchString(prefix) {
		return nil, fmt.Errorf("netns: invalid prefix %q (want [A-Za-z0-9][A-Za-z0-9_.-]{0,39})", prefix)
	}
	if n < 1 || n > maxNodes {
		return nil, fmt.Errorf("netns: node count %d out of range 1..%d", n, maxNodes)
	}
	if err := Available(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	if err := cleanStale(baseOf(prefix)); err != nil {
		return nil, err
	}
	nt := &Net{
		prefix:   prefix,
		n:        n,
		hostLink: hostLinkName(prefix),
		cuts:     make(map[link]bool),
		dirty:    make(map[int]bool),
	}
	nt.apply = nt.applyNft
	for _, ns := range nt.namespaces() {
		if exists(filepath.Join(netnsDir, ns)) {
			return nil, fmt.Errorf("%w: %s", ErrInUse, ns)
		}
	}
	if exists(filepath.Join("/sys/class/net", nt.hostLink)) {
		return nil, fmt.Errorf("%w: host link %s", ErrInUse, nt.hostLink)
	}
	subnet, err := pickSubnet(prefix)
	if err != nil {
		return nil, err
	}
	nt.subnet = subnet
	if err := nt.create(); err != nil {
		return nil, errors.Join(err, nt.destroy())
	}
	return nt, nil
}

// create builds the namespaces, bridge and veths. The owner files are written
// before the namespaces exist, so a namespace of a live owner always has one.
func (nt *Net) create() error {
	rec := selfOwner(nt.Subnet(), nt.hostLink)
	for _, ns := range nt.namespaces() {
		if err := writeOwner(ns, rec); err != nil {
			return err
		}
	}
	br := nt.bridgeNS()
	steps := [][]string{
		{"netns", "add", br},
		{"-n", br, "link", "set", "lo", "up"},
		{"-n", br, "link", "add", bridgeName, "type", "bridge"},
		{"-n", br, "link", "set", bridgeName, "up"},
	}
	for i := 0; i < nt.n; i++ {
		ns, port := nt.Namespace(i), fmt.Sprintf("v%d", i)
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			// Created inside the bridge namespace with the peer moved straight
			// into the node namespace: no half-made pair is ever left in the
			// root namespace.
			[]string{"-n", br, "link", "add", port, "type", "veth", "peer", "name", nodeIfName, "netns", ns},
			[]string{"-n", br, "link", "set", port, "master", bridgeName, "up"},
			[]string{"-n", ns, "addr", "add", nt.IP(i) + "/24", "dev", nodeIfName},
			[]string{"-n", ns, "link", "set", nodeIfName, "up"},
		)
	}
	steps = append(steps,
		[]string{"link", "add", nt.hostLink, "type", "veth", "peer", "name", "vh", "netns", br},
		[]string{"-n", br, "link", "set", "vh", "master", bridgeName, "up"},
		[]string{"addr", "add", nt.HostIP() + "/24", "dev", nt.hostLink},
		[]string{"link", "set", nt.hostLink, "up"},
	)
	for _, args := range steps {
		if err := runIP(args...); err != nil {
			return err
		}
	}
	// IPv6 would give every veth a link-local address and chatter over the
	// bridge; the suite uses IPv4 only and the drop rules match IPv4 only, so
	// turn it off where we can (best effort: IPv6 may be absent).
	for _, ns := range nt.namespaces() {
		_ = runIn(ns, "", "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
	}
	_ = os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", nt.hostLink, "disable_ipv6"), []byte("1"), 0o644)

	// Install the (empty) fault table in every node so a broken nft shows up
	// here rather than at the first Cut.
	for i := 0; i < nt.n; i++ {
		if err := nt.applyLocked(i); err != nil {
			return err
		}
	}
	return nil
}

// Len is the number of nodes.
func (nt *Net) Len() int { return nt.n }

// Prefix is the prefix the Net was created with.
func (nt *Net) Prefix() string { return nt.prefix }

// Namespace is the name of node i's network namespace ("<prefix>-n<i>").
func (nt *Net) Namespace(i int) string {
	nt.check(i)
	return fmt.Sprintf("%s-n%d", nt.prefix, i)
}

// BridgeNamespace is the name of the namespace holding the bridge.
func (nt *Net) BridgeNamespace() string { return nt.bridgeNS() }

// HostLink is the name of the host's veth into the bridge (root namespace).
func (nt *Net) HostLink() string { return nt.hostLink }

// Subnet is the bridge subnet in CIDR form, e.g. "10.123.45.0/24".
func (nt *Net) Subnet() string {
	return fmt.Sprintf("10.%d.%d.0/24", nt.subnet[0], nt.subnet[1])
}

// IP is node i's address (10.X.Y.<i+1>). It panics if i is out of range.
func (nt *Net) IP(i int) string {
	nt.check(i)
	return fmt.Sprintf("10.%d.%d.%d", nt.subnet[0], nt.subnet[1], i+1)
}

// HostIP is the host namespace's address in the bridge subnet (10.X.Y.254).
// Processes in the node namespaces reach the test process there.
func (nt *Net) HostIP() string {
	return fmt.Sprintf("10.%d.%d.%d", nt.subnet[0], nt.subnet[1], hostOctet)
}

// Command returns a command that runs name with args inside node i's
// namespace (`ip netns exec <ns> name args...`). `ip netns exec` execs the
// program in place, so cmd.Process.Pid is the program's own PID: stop it by
// that PID. Stop every such process before Close: a process still inside a
// deleted namespace keeps it alive (unreachable) until it exits.
func (nt *Net) Command(i int, name string, args ...string) *exec.Cmd {
	return exec.Command(ipPath(), append([]string{"netns", "exec", nt.Namespace(i), name}, args...)...)
}

// Close deletes every namespace, veth and the bridge, and the owner files.
// It is idempotent and also tolerates pieces that were removed by someone
// else. Processes still running inside the namespaces are not killed.
func (nt *Net) Close() error {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if nt.closed {
		return nil
	}
	nt.closed = true
	return nt.destroy()
}

// destroy removes whatever exists of this Net: the host veth first (its route
// must not outlive the bridge: traffic to the subnet would then leave the
// machine by the default route), then the namespaces, then the owner files.
func (nt *Net) destroy() error {
	var errs []error
	if exists(filepath.Join("/sys/class/net", nt.hostLink)) {
		if err := runIP("link", "del", nt.hostLink); err != nil && exists(filepath.Join("/sys/class/net", nt.hostLink)) {
			errs = append(errs, err)
		}
	}
	for _, ns := range nt.namespaces() {
		if err := deleteNamespace(ns); err != nil {
			errs = append(errs, err)
		}
		if err := removeOwner(ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (nt *Net) bridgeNS() string { return nt.prefix + "-br" }

// namespaces lists every namespace of this Net, nodes first.
func (nt *Net) namespaces() []string {
	out := make([]string, 0, nt.n+1)
	for i := 0; i < nt.n; i++ {
		out = append(out, fmt.Sprintf("%s-n%d", nt.prefix, i))
	}
	return append(out, nt.bridgeNS())
}

func (nt *Net) check(i int) {
	if i < 0 || i >= nt.n {
		panic(fmt.Sprintf("netns: node %d out of range 0..%d", i, nt.n-1))
	}
}

// baseOf is the part of prefix before the first '-': prefixes with the same
// base are one family whose stale leftovers New cleans.
func baseOf(prefix string) string {
	base, _, _ := strings.Cut(prefix, "-")
	return base
}

// hostLinkName derives the host veth name from the prefix: the base (at most
// 6 characters), '-', and 8 hex digits of a hash of the whole prefix — at
// most 15 characters, the kernel's limit for interface names.
func hostLinkName(prefix string) string {
	return fmt.Sprintf("%s-%08x", linkBase(baseOf(prefix)), hash32(prefix))
}

func linkBase(base string) string {
	if len(base) > 6 {
		return base[:6]
	}
	return base
}

func hash32(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// pickSubnet derives 10.X.Y.0/24 from the prefix (X in 64..191, clear of
// the commonly used 10.0/10.1 ranges) and probes further candidates while the
// candidate overlaps any IPv4 route of the host or a subnet recorded by a
// live owner.
func pickSubnet(prefix string) ([2]byte, error) {
	taken, err := hostRoutes()
	if err != nil {
		return [2]byte{}, err
	}
	taken = append(taken, liveSubnets()...)
	h := hash32(prefix)
	for k := uint32(0); k < 256; k++ {
		v := h + k*0x9E3779B1 // golden-ratio stride spreads the probes
		cand := [2]byte{byte(64 + v%128), byte(v >> 8)}
		_, cidr, _ := net.ParseCIDR(fmt.Sprintf("10.%d.%d.0/24", cand[0], cand[1]))
		if !overlapsAny(cidr, taken) {
			return cand, nil
		}
	}
	return [2]byte{}, ErrNoSubnet
}

func overlapsAny(c *net.IPNet, taken []*net.IPNet) bool {
	for _, t := range taken {
		if t.Contains(c.IP) || c.Contains(t.IP) {
			return true
		}
	}
	return false
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
