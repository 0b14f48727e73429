package netns

import (
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

// These tests need neither root nor nft: they drive the cut logic with a
// recording apply function instead of nftables.

// fakeNet is a Net without namespaces whose rule installs are recorded.
func fakeNet(n int) (*Net, *[]string) {
	var applied []string
	nt := &Net{prefix: "fake", n: n, subnet: [2]byte{99, 1}, cuts: map[link]bool{}, dirty: map[int]bool{}}
	nt.apply = func(i int, from []string) error {
		applied = append(applied, fmt.Sprintf("n%d:[%s]", i, strings.Join(from, " ")))
		return nil
	}
	return nt, &applied
}

func TestNetns_CutSetLogic(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(nt *Net) error
		want [][2]int
	}{
		{"cut one way", func(nt *Net) error { return nt.Cut(0, 1) }, [][2]int{{0, 1}}},
		{"cut twice", func(nt *Net) error {
			if err := nt.Cut(0, 1); err != nil {
				return err
			}
			return nt.Cut(0, 1)
		}, [][2]int{{0, 1}}},
		{"heal", func(nt *Net) error {
			if err := nt.Cut(0, 1); err != nil {
				return err
			}
			return nt.Heal(0, 1)
		}, [][2]int{}},
		{"isolate", func(nt *Net) error { return nt.Isolate(1) }, [][2]int{{0, 1}, {1, 0}, {1, 2}, {2, 1}}},
		{"partition with an unlisted node", func(nt *Net) error { return nt.Partition([]int{0, 1}) },
			[][2]int{{0, 2}, {1, 2}, {2, 0}, {2, 1}}},
		{"partition replaces", func(nt *Net) error {
			if err := nt.Isolate(0); err != nil {
				return err
			}
			return nt.Partition([]int{0, 1}, []int{2})
		}, [][2]int{{0, 2}, {1, 2}, {2, 0}, {2, 1}}},
		{"partition of all heals", func(nt *Net) error {
			if err := nt.Isolate(0); err != nil {
				return err
			}
			return nt.Partition([]int{2, 1, 0})
		}, [][2]int{}},
		{"heal all", func(nt *Net) error {
			if err := nt.Partition([]int{0}, []int{1}, []int{2}); err != nil {
				return err
			}
			return nt.HealAll()
		}, [][2]int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nt, _ := fakeNet(3)
			if err := tc.do(nt); err != nil {
				t.Fatal(err)
			}
			if got := nt.Cuts(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Cuts() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNetns_RebuildsOnlyChangedNodes(t *testing.T) {
	nt, applied := fakeNet(3)
	if err := nt.Cut(0, 1); err != nil {
		t.Fatal(err)
	}
	if err := nt.Cut(0, 1); err != nil { // no change: nothing to rebuild
		t.Fatal(err)
	}
	if err := nt.Cut(2, 1); err != nil {
		t.Fatal(err)
	}
	want := []string{"n1:[10.99.1.1]", "n1:[10.99.1.1 10.99.1.3]"}
	if !reflect.DeepEqual(*applied, want) {
		t.Errorf("applied %v, want %v", *applied, want)
	}
}

func TestNetns_FailedRebuildIsRetried(t *testing.T) {
	nt, applied := fakeNet(2)
	fail := true
	rec := nt.apply
	nt.apply = func(i int, from []string) error {
		if fail {
			return fmt.Errorf("nft broke")
		}
		return rec(i, from)
	}
	if err := nt.Cut(0, 1); err == nil {
		t.Fatal("Cut succeeded with a failing apply")
	}
	fail = false
	// An unrelated change also re-applies the node left dirty.
	if err := nt.Cut(1, 0); err != nil {
		t.Fatal(err)
	}
	want := []string{"n0:[10.99.1.2]", "n1:[10.99.1.1]"}
	if !reflect.DeepEqual(*applied, want) {
		t.Errorf("applied %v, want %v", *applied, want)
	}
}

func TestNetns_RejectsBadArguments(t *testing.T) {
	nt, applied := fakeNet(3)
	for name, err := range map[string]error{
		"Cut(1,1)":               nt.Cut(1, 1),
		"Cut(0,3)":               nt.Cut(0, 3),
		"Heal(-1,0)":             nt.Heal(-1, 0),
		"Isolate(3)":             nt.Isolate(3),
		"Partition dup":          nt.Partition([]int{0, 1}, []int{1}),
		"Partition out of range": nt.Partition([]int{5}),
	} {
		if err == nil {
			t.Errorf("%s succeeded", name)
		}
	}
	if len(*applied) != 0 {
		t.Errorf("rejected calls applied rules: %v", *applied)
	}
	for _, p := range []string{"", "-x", "a b", "a/b", strings.Repeat("a", 41)} {
		if _, err := New(p, 3); err == nil {
			t.Errorf("New(%q) succeeded", p)
		}
	}
}

func TestNetns_NftScript(t *testing.T) {
	got := nftScript([]string{"10.1.2.1", "10.1.2.3"})
	for _, want := range []string{
		"flush table inet discoverd_fault\n",
		"type filter hook input priority 0; policy accept;",
		"ip saddr { 10.1.2.1, 10.1.2.3 } counter drop",
		"type filter hook output priority 0; policy accept;",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("script lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(nftScript(nil), "drop") {
		t.Errorf("script with no cuts drops:\n%s", nftScript(nil))
	}
}

func TestNetns_Names(t *testing.T) {
	for _, tc := range []struct{ prefix, base string }{
		{"dsc-1234", "dsc"},
		{"dsc-1234-7", "dsc"},
		{"plain", "plain"},
		{"averylongbase-1", "averylongbase"},
	} {
		if got := baseOf(tc.prefix); got != tc.base {
			t.Errorf("baseOf(%q) = %q, want %q", tc.prefix, got, tc.base)
		}
		l := hostLinkName(tc.prefix)
		if len(l) > 15 || !strings.HasPrefix(l, linkBase(tc.base)+"-") {
			t.Errorf("hostLinkName(%q) = %q", tc.prefix, l)
		}
	}
	if hostLinkName("dsc-1") == hostLinkName("dsc-2") {
		t.Error("host link names of different prefixes collide")
	}
}

func TestNetns_OwnerLiveness(t *testing.T) {
	self := selfOwner("", "")
	if !self.alive() {
		t.Errorf("own process %+v not alive", self)
	}
	if recycled := (owner{PID: self.PID, Start: self.Start + 1}); recycled.alive() {
		t.Error("a PID with another start time counts as alive")
	}
	if (owner{PID: 0}).alive() || (owner{PID: -1}).alive() {
		t.Error("PID <= 0 counts as alive")
	}
	if _, err := procStart(os.Getpid()); err != nil {
		t.Error(err)
	}

	// An exited child not yet reaped is a zombie: /proc still lists it with
	// its start time, but it must count as dead.
	child := exec.Command("true")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Wait()
	zombie := owner{PID: child.Process.Pid}
	zombie.Start, _ = procStart(zombie.PID)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, state, err := procStat(zombie.PID)
		if err != nil {
			t.Fatal(err)
		}
		if state == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d never became a zombie (state %c)", zombie.PID, state)
		}
		time.Sleep(10 * time.Millisecond) // polling a state with a deadline
	}
	if zombie.alive() {
		t.Error("a zombie counts as alive")
	}
}
