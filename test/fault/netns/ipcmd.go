package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// cmdTimeout bounds every `ip`/`nft` invocation; they take milliseconds, so
// hitting it means something is badly wrong (a hung netlink call).
const cmdTimeout = 15 * time.Second

// ipPath is the `ip` program, resolved once per call (cheap) so a PATH
// change between Available and New is honoured.
func ipPath() string {
	if p, err := exec.LookPath("ip"); err == nil {
		return p
	}
	return "ip"
}

// runIP runs `ip args...` and returns an error that carries its output.
func runIP(args ...string) error {
	_, err := run("", ipPath(), args...)
	return err
}

// runIn runs name args... inside namespace ns with stdin as its input.
func runIn(ns, stdin, name string, args ...string) error {
	_, err := run(stdin, ipPath(), append([]string{"netns", "exec", ns, name}, args...)...)
	return err
}

func run(stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("netns: %s %s: %w: %s",
			filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// deleteNamespace removes a named namespace if it exists. The kernel frees the
// namespace (and the veth ends inside it) asynchronously once nothing holds
// it; the name is gone from `ip netns list` when this returns.
func deleteNamespace(ns string) error {
	path := filepath.Join(netnsDir, ns)
	if !exists(path) {
		return nil
	}
	if err := runIP("netns", "del", ns); err != nil {
		if !exists(path) {
			return nil // raced with another deleter
		}
		return err
	}
	return nil
}

// listNamespaces returns the names in /run/netns (what `ip netns list` shows).
func listNamespaces() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, nil
}

// hostRoutes returns the destinations of the host's IPv4 routes in every
// table, except default routes (which overlap everything by design).
func hostRoutes() ([]*net.IPNet, error) {
	out, err := run("", ipPath(), "-4", "route", "show", "table", "all")
	if err != nil {
		return nil, err
	}
	var nets []*net.IPNet
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		switch dst {
		case "local", "broadcast", "unicast", "blackhole", "unreachable", "prohibit", "throw", "multicast", "anycast", "nat":
			if len(f) < 2 {
				continue
			}
			dst = f[1]
		}
		if dst == "default" {
			continue
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if _, n, err := net.ParseCIDR(dst); err == nil {
			nets = append(nets, n)
		}
	}
	return nets, nil
}
