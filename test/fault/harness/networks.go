package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/discoverd/discoverd/test/fault/netns"
	"github.com/discoverd/discoverd/test/fault/netproxy"
)

// Shaper is a Network that can also slow and lose traffic on a link.
type Shaper interface {
	Network
	// Shape sets the delay and the share of chunks dropped on the link
	// from→to (zero values: none).
	Shape(from, to int, delay time.Duration, drop float64) error
}

// Proxies is the no-root Network: every node listens on loopback and dials
// each peer through its own per-directed-link proxy (-peer-dial), so links
// can be cut one way, delayed or made lossy.
type Proxies struct {
	Seed int64

	mu    sync.Mutex
	mesh  *netproxy.Mesh
	ids   []string
	links map[[2]int]netproxy.Link
}

func (p *Proxies) Name() string { return "proxy" }

// Layout picks free loopback ports.
func (p *Proxies) Layout(n int) ([]Addrs, error) { return freeLoopback(n) }

// Ready starts the proxy mesh in front of the nodes' addresses.
func (p *Proxies) Ready(ids []string, addrs []Addrs) error {
	targets := make([]string, len(addrs))
	for i, a := range addrs {
		targets[i] = a.Advertise
	}
	m, err := netproxy.NewMesh(targets, p.Seed)
	if err != nil {
		return err
	}
	p.mesh, p.ids, p.links = m, ids, map[[2]int]netproxy.Link{}
	return nil
}

func (p *Proxies) NodeArgs(i int) []string {
	return []string{"-peer-dial", p.mesh.Overrides(i, p.ids)}
}

func (p *Proxies) Command(_ int, bin string, args ...string) *exec.Cmd {
	return exec.Command(bin, args...)
}

func (p *Proxies) update(from, to int, f func(*netproxy.Link)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.links[[2]int{from, to}]
	f(&l)
	p.links[[2]int{from, to}] = l
	p.mesh.SetLink(from, to, l)
}

func (p *Proxies) Cut(from, to int) error {
	p.update(from, to, func(l *netproxy.Link) { l.Blackhole = true })
	return nil
}

func (p *Proxies) Heal(from, to int) error {
	p.update(from, to, func(l *netproxy.Link) { l.Blackhole = false })
	return nil
}

func (p *Proxies) Shape(from, to int, delay time.Duration, drop float64) error {
	p.update(from, to, func(l *netproxy.Link) { l.Delay, l.DropShare = delay, drop })
	return nil
}

func (p *Proxies) HealAll() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.links = map[[2]int]netproxy.Link{}
	p.mesh.HealAll()
	return nil
}

func (p *Proxies) Close() error {
	if p.mesh == nil {
		return nil
	}
	return p.mesh.Close()
}

// Stats returns the mesh's per-link counters (for reports).
func (p *Proxies) Stats() netproxy.Stats { return p.mesh.Stats() }

// Namespaces is the root-only Network: every node runs in its own network
// namespace with its own IP, and links are cut with nftables drop rules.
// Established connections stall silently, as on a real network.
type Namespaces struct {
	Port int // port every node listens on in its namespace (default 7000)

	net *netns.Net
}

func (s *Namespaces) Name() string { return "netns" }

// Layout creates the namespaces.
func (s *Namespaces) Layout(n int) ([]Addrs, error) {
	if err := netns.Available(); err != nil {
		return nil, err
	}
	if s.Port == 0 {
		s.Port = 7000
	}
	nt, err := netns.New("dsc"+strconv.Itoa(os.Getpid()%100000), n)
	if err != nil {
		return nil, err
	}
	s.net = nt
	var out []Addrs
	for i := range n {
		a := net.JoinHostPort(nt.IP(i), strconv.Itoa(s.Port))
		out = append(out, Addrs{Listen: a, Advertise: a, Client: a})
	}
	return out, nil
}

func (s *Namespaces) Ready([]string, []Addrs) error { return nil }
func (s *Namespaces) NodeArgs(int) []string         { return nil }
func (s *Namespaces) Command(i int, bin string, args ...string) *exec.Cmd {
	return s.net.Command(i, bin, args...)
}
func (s *Namespaces) Cut(from, to int) error  { return s.net.Cut(from, to) }
func (s *Namespaces) Heal(from, to int) error { return s.net.Heal(from, to) }
func (s *Namespaces) HealAll() error          { return s.net.HealAll() }
func (s *Namespaces) Close() error {
	if s.net == nil {
		return nil
	}
	return s.net.Close()
}

// NewNetwork returns the backend by name: "proxy", "netns" or "loopback".
func NewNetwork(name string, seed int64) (Network, error) {
	switch name {
	case "", "proxy":
		return &Proxies{Seed: seed}, nil
	case "netns":
		return &Namespaces{}, nil
	case "loopback":
		return Loopback{}, nil
	}
	return nil, fmt.Errorf("network %q: want proxy, netns or loopback", name)
}
