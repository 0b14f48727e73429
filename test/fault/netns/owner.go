package netns

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// owner is what an owner file records about the process that created a
// namespace. The start time (in clock ticks since boot, field 22 of
// /proc/<pid>/stat) guards against a recycled PID passing for the owner.
type owner struct {
	PID      int
	Start    uint64 // 0 if unknown: then only the PID is checked
	Subnet   string // the Net's bridge subnet, e.g. "10.123.45.0/24"
	HostLink string // the host veth in the root namespace
}

func selfOwner(subnet, hostLink string) owner {
	start, _ := procStart(os.Getpid())
	return owner{PID: os.Getpid(), Start: start, Subnet: subnet, HostLink: hostLink}
}

// alive reports whether the recorded owner process still runs. A zombie is
// dead: a killed test process whose parent went too stays a zombie for as
// long as nobody reaps it (a sandbox's PID 1 may never do so).
func (o owner) alive() bool {
	if o.PID <= 0 {
		return false
	}
	start, state, err := procStat(o.PID)
	if err != nil || state == 'Z' || state == 'X' {
		return false
	}
	return o.Start == 0 || start == o.Start
}

// procStart reads a process's start time from /proc/<pid>/stat.
func procStart(pid int) (uint64, error) {
	start, _, err := procStat(pid)
	return start, err
}

// procStat reads a process's start time and state letter from
// /proc/<pid>/stat.
func procStat(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces; the
	// fields after the last ')' start at field 3 (state).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("netns: bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	const startField = 22 - 3
	if len(f) <= startField || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("netns: short /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[startField], 10, 64)
	return start, f[0][0], err
}

func ownerPath(ns string) string { return filepath.Join(ownerDir, ns+".owner") }

// writeOwner records o as the owner of namespace ns.
func writeOwner(ns string, o owner) error {
	body := fmt.Sprintf("pid=%d\nstart=%d\nsubnet=%s\nhostlink=%s\n", o.PID, o.Start, o.Subnet, o.HostLink)
	tmp := ownerPath(ns) + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	if err := os.Rename(tmp, ownerPath(ns)); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	return nil
}

// readOwner reads the owner file of ns; a missing file is os.ErrNotExist.
func readOwner(ns string) (owner, error) {
	f, err := os.Open(ownerPath(ns))
	if err != nil {
		return owner{}, err
	}
	defer f.Close()
	var o owner
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "pid":
			o.PID, _ = strconv.Atoi(v)
		case "start":
			o.Start, _ = strconv.ParseUint(v, 10, 64)
		case "subnet":
			o.Subnet = v
		case "hostlink":
			o.HostLink = v
		}
	}
	return o, sc.Err()
}

func removeOwner(ns string) error {
	err := os.Remove(ownerPath(ns))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns: %w", err)
	}
	return nil
}

// cleanStale deletes what dead runs of the prefix family base left behind:
// namespaces "<base>-*" whose owner file is missing or names a dead process,
// owner files of dead processes, and host veths "<base[:6]>-<8 hex>" that no
// live owner records. Owner files are written before a namespace or link is
// created, so a live owner's pieces are never mistaken for stale ones; the
// listing order below (links, then namespaces, then owner files) keeps that
// true against a concurrent New in another process.
func cleanStale(base string) error {
	links, err := familyLinks(base)
	if err != nil {
		return err
	}
	nss, err := listNamespaces()
	if err != nil {
		return err
	}
	var errs []error
	liveLinks := map[string]bool{}
	drop := func(ns string, o owner, haveOwner bool) {
		if haveOwner && o.HostLink != "" && strings.HasPrefix(o.HostLink, linkBase(base)+"-") && !liveLinks[o.HostLink] {
			if exists(filepath.Join("/sys/class/net", o.HostLink)) {
				if err := runIP("link", "del", o.HostLink); err != nil && exists(filepath.Join("/sys/class/net", o.HostLink)) {
					errs = append(errs, err)
				}
			}
		}
		if err := deleteNamespace(ns); err != nil {
			errs = append(errs, err)
		}
		if err := removeOwner(ns); err != nil {
			errs = append(errs, err)
		}
	}

	// Owner files first decide who is alive (a live owner's link must survive
	// even if a dead owner of an older run recorded the same name).
	files, _ := filepath.Glob(filepath.Join(ownerDir, base+"-*.owner"))
	type rec struct {
		o  owner
		ok bool
	}
	owners := map[string]rec{}
	for _, f := range files {
		ns := strings.TrimSuffix(filepath.Base(f), ".owner")
		o, err := readOwner(ns)
		owners[ns] = rec{o, err == nil}
		if err == nil && o.alive() {
			liveLinks[o.HostLink] = true
		}
	}
	for _, ns := range nss {
		if !strings.HasPrefix(ns, base+"-") {
			continue
		}
		r := owners[ns]
		if r.ok && r.o.alive() {
			continue
		}
		drop(ns, r.o, r.ok)
		delete(owners, ns)
	}
	for ns, r := range owners {
		if !r.ok || !r.o.alive() {
			drop(ns, r.o, r.ok) // no namespace left: removes the file and the link
		}
	}
	for _, l := range links {
		if liveLinks[l] || !exists(filepath.Join("/sys/class/net", l)) {
			continue
		}
		if err := runIP("link", "del", l); err != nil && exists(filepath.Join("/sys/class/net", l)) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// familyLinks lists veth links of the root namespace named like the host
// links of the family base.
func familyLinks(base string) ([]string, error) {
	re := regexp.MustCompile("^" + regexp.QuoteMeta(linkBase(base)) + "-[0-9a-f]{8}$")
	ents, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !re.MatchString(e.Name()) {
			continue
		}
		if isVeth(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func isVeth(name string) bool {
	out, err := run("", ipPath(), "-o", "-d", "link", "show", "dev", name)
	return err == nil && strings.Contains(out, " veth ")
}

// liveSubnets returns the subnets recorded by live owners of any family, so
// two Nets never share a /24 even before the other's routes exist.
func liveSubnets() []*net.IPNet {
	files, _ := filepath.Glob(filepath.Join(ownerDir, "*.owner"))
	var out []*net.IPNet
	for _, f := range files {
		o, err := readOwner(strings.TrimSuffix(filepath.Base(f), ".owner"))
		if err != nil || !o.alive() {
			continue
		}
		if _, n, err := net.ParseCIDR(o.Subnet); err == nil {
			out = append(out, n)
		}
	}
	return out
}
