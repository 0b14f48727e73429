package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// ErrUnavailable wraps every reason Available gives.
var ErrUnavailable = errors.New("netns backend unavailable")

// Available reports why the backend cannot run here — not root, no `ip`, no
// `nft` (Debian: apt-get install nftables), or the kernel refuses a network
// namespace, a bridge, a veth pair or an nftables table — or nil. It creates
// and deletes a throwaway namespace, so it takes some tens of milliseconds.
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root (euid %d)", ErrUnavailable, os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: no ip program (iproute2): %v", ErrUnavailable, err)
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("%w: no nft program (apt-get install nftables): %v", ErrUnavailable, err)
	}
	ns := fmt.Sprintf("discoverd-probe-%d", os.Getpid())
	_ = deleteNamespace(ns) // a leftover of this PID's earlier call
	if err := runIP("netns", "add", ns); err != nil {
		return fmt.Errorf("%w: cannot create a network namespace: %v", ErrUnavailable, err)
	}
	defer deleteNamespace(ns)
	probes := []struct {
		what string
		run  func() error
	}{
		{"a bridge", func() error { return runIP("-n", ns, "link", "add", "pbr", "type", "bridge") }},
		{"a veth pair", func() error { return runIP("-n", ns, "link", "add", "pva", "type", "veth", "peer", "name", "pvb") }},
		{"an nftables table", func() error { return runIn(ns, nftScript([]string{"10.0.0.1"}), "nft", "-f", "-") }},
	}
	for _, p := range probes {
		if err := p.run(); err != nil {
			return fmt.Errorf("%w: cannot create %s: %v", ErrUnavailable, p.what, err)
		}
	}
	return nil
}
