package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
)

// TestMeta_ConcurrentCompareAndSet: clients each talking to one node of a
// 3-node cluster of real processes race SetMeta with the same expected
// index, round after round. In every round exactly one wins; every other
// gets a conflict naming the winner's index; and a watch sees exactly the
// winners' writes, in order — nothing a loser sent was applied.
func TestMeta_ConcurrentCompareAndSet(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	h.waitStable(c.servers(), c.ids(), 30*time.Second)
	const (
		name    = "db"
		perNode = 2
		rounds  = 30
	)
	var clients []*client.Client
	for _, nd := range c.nodes {
		for range perNode {
			cl, err := client.NewWithConfig(client.Config{Servers: []string{nd.addr}, RequestTimeout: 15 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cl.Close() })
			clients = append(clients, cl)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A watcher on a node of its own, from the state before any write.
	wc, err := client.New(c.nodes[0].addr)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	w, err := wc.Watch(ctx, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if e, err := w.Next(ctx); err != nil || e.Kind != client.EventCurrent {
		t.Fatalf("watch of a new service: %+v, %v; want its current marker", e, err)
	}

	type winner struct {
		index uint64
		data  string
	}
	var winners []winner
	var expect uint64
	for round := range rounds {
		type result struct {
			idx uint64
			err error
		}
		results := make([]result, len(clients))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, cl := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				idx, err := cl.SetMeta(ctx, name, []byte(fmt.Sprintf("round %d client %d", round, i)), expect)
				results[i] = result{idx, err}
			}()
		}
		close(start)
		wg.Wait()
		won := -1
		for i, r := range results {
			if r.err != nil {
				continue
			}
			if won >= 0 {
				t.Fatalf("round %d (expecting %d): clients %d and %d both won, at %d and %d", round, expect, won, i, results[won].idx, r.idx)
			}
			won = i
		}
		if won < 0 {
			t.Fatalf("round %d (expecting %d): nobody won: %v", round, expect, results)
		}
		idx := results[won].idx
		if idx <= expect {
			t.Fatalf("round %d: the winner's index %d is not above the expected %d", round, idx, expect)
		}
		for i, r := range results {
			if i == won {
				continue
			}
			cur, ok := client.ConflictIndex(r.err)
			if !ok || cur != idx {
				t.Fatalf("round %d: client %d (node %s) got %v (conflict %v at %d), want a conflict at the winner's index %d",
					round, i, clients[i].Servers()[0], r.err, ok, cur, idx)
			}
		}
		winners = append(winners, winner{idx, fmt.Sprintf("round %d client %d", round, won)})
		expect = idx
	}

	// Every client reads the last winner, even through its own follower
	// with a default read: it has seen that index (its write or its conflict).
	last := winners[len(winners)-1]
	for i, cl := range clients {
		m, err := cl.GetMeta(ctx, name, client.MetaOptions{})
		if err != nil || m.Index != last.index || string(m.Data) != last.data {
			t.Fatalf("client %d reads %q at %d (%v), want %q at %d", i, m.Data, m.Index, err, last.data, last.index)
		}
	}
	// The log holds the winners' writes and nothing else.
	for _, want := range winners {
		e, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind != client.EventMeta || e.Meta == nil || e.Index != want.index || string(e.Meta.Data) != want.data {
			t.Fatalf("watch: %s at %d (%+v), want the meta event of %q at %d", e.Kind, e.Index, e.Meta, want.data, want.index)
		}
	}
	t.Logf("%d rounds of %d clients over %d nodes: one winner each, the rest conflicts at its index", rounds, len(clients), len(c.nodes))
}

// jsonMeta is `discoverd meta get -json`.
type jsonMeta struct {
	Name       string  `json:"name"`
	Index      uint64  `json:"index"`
	Size       int     `json:"size"`
	Data       *string `json:"data"`
	DataBase64 []byte  `json:"data_base64"`
}

// metaJSON runs `discoverd meta get -json -consistent name`.
func (h *harness) metaJSON(servers, name string) jsonMeta {
	h.t.Helper()
	r := h.mustCLI(10*time.Second, "meta", "get", name, "-json", "-consistent", "-servers", servers)
	var m jsonMeta
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		h.t.Fatalf("meta get -json printed %q: %v", r.stdout, err)
	}
	return m
}

// wantCLI fails the test unless r exited with code and its stderr holds
// every one of want.
func wantCLI(t *testing.T, r cliResult, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d: %v", r.code, code, r)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Fatalf("stderr does not say %q: %v", w, r)
		}
	}
}

// TestMeta_CLI: discoverd meta get, set and delete against real processes:
// create-only, compare-and-set with -index, a conflict that names the index
// to retry with, data from a file and from standard input (binary too),
// bad input refused before anything is sent, watch lines, and metadata
// that outlives the service's last instance.
func TestMeta_CLI(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	all := c.servers()
	h.waitStable(all, c.ids(), 30*time.Second)
	w := h.startWatch("watch-db", all, "db")
	if e := w.next(t, 10*time.Second); e.Kind != "current" {
		t.Fatalf("watch: %s, want current", e.line)
	}

	// Nothing yet.
	wantCLI(t, h.cli(10*time.Second, "meta", "get", "db", "-servers", all), 1, "db has no metadata")
	if m := h.metaJSON(all, "db"); m.Index != 0 || m.Size != 0 {
		t.Fatalf("meta get -json of nothing: %+v, want index 0", m)
	}

	// Create from a file; a second create conflicts and says with what index to retry.
	conf := filepath.Join(h.dir, "db.conf")
	if err := os.WriteFile(conf, []byte("primary=10.0.0.5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := h.mustCLI(10*time.Second, "meta", "set", "db", "-file", conf, "-servers", all)
	i1, err := strconv.ParseUint(strings.TrimSpace(r.stdout), 10, 64)
	if err != nil || i1 == 0 {
		t.Fatalf("meta set printed %q, want the new index alone", r.stdout)
	}
	r = h.cli(10*time.Second, "meta", "set", "-servers", all, "db", "-file", conf)
	wantCLI(t, r, 1, "only if it has none", fmt.Sprintf("it is at index %d now", i1), fmt.Sprintf("retry with -index %d", i1))
	if r.stdout != "" {
		t.Fatalf("a conflict printed %q on stdout", r.stdout)
	}
	if e := w.next(t, 10*time.Second); e.Kind != "meta" || e.Index != i1 || string(e.DataBase64) != "primary=10.0.0.5\n" || e.Size == nil || *e.Size != 17 {
		t.Fatalf("watch after the set: %s", e.line)
	}

	// Compare-and-set from standard input, flags after the name.
	r = h.cliStdin(10*time.Second, []byte("primary=10.0.0.6\n"), "meta", "set", "db", "-index", fmt.Sprint(i1), "-servers", all)
	wantCLI(t, r, 0)
	i2, err := strconv.ParseUint(strings.TrimSpace(r.stdout), 10, 64)
	if err != nil || i2 <= i1 {
		t.Fatalf("meta set -index %d printed %q", i1, r.stdout)
	}
	r = h.cliStdin(10*time.Second, []byte("stale"), "meta", "set", "db", "-index", fmt.Sprint(i1), "-servers", all)
	wantCLI(t, r, 1, fmt.Sprintf("expecting index %d", i1), fmt.Sprintf("it is at index %d now", i2))

	// get prints the data exactly, its index on stderr; -json both.
	r = h.mustCLI(10*time.Second, "meta", "get", "db", "-servers", all)
	if r.stdout != "primary=10.0.0.6\n" || !strings.Contains(r.stderr, fmt.Sprintf("metadata of db at index %d (17 bytes)", i2)) {
		t.Fatalf("meta get: %v", r)
	}
	if m := h.metaJSON(all, "db"); m.Index != i2 || m.Data == nil || *m.Data != "primary=10.0.0.6\n" || string(m.DataBase64) != *m.Data || m.Size != 17 {
		t.Fatalf("meta get -json: %+v", m)
	}

	// Binary data round-trips; -json then has no text.
	bin := []byte{0, 0xff, 0xfe, 'x', '\n'}
	r = h.cliStdin(10*time.Second, bin, "meta", "set", "db", "-index", fmt.Sprint(i2), "-servers", all)
	wantCLI(t, r, 0)
	i3, _ := strconv.ParseUint(strings.TrimSpace(r.stdout), 10, 64)
	if m := h.metaJSON(all, "db"); m.Index != i3 || m.Data != nil || !bytes.Equal(m.DataBase64, bin) {
		t.Fatalf("binary metadata: %+v", m)
	}
	if r := h.mustCLI(10*time.Second, "meta", "get", "db", "-servers", all); r.stdout != string(bin) {
		t.Fatalf("meta get of binary data printed %q", r.stdout)
	}

	// Bad input: refused (exit 2) with what is wrong, nothing changed.
	big := filepath.Join(h.dir, "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 64<<10+1), 0o600); err != nil {
		t.Fatal(err)
	}
	wantCLI(t, h.cli(10*time.Second, "meta", "set", "db", "-index", fmt.Sprint(i3), "-file", big, "-servers", all), 2,
		"metadata of db is 65537 bytes, the limit is 65536")
	wantCLI(t, h.cli(10*time.Second, "meta", "set", "db/x", "-file", conf, "-servers", all), 2, `service name "db/x" has '/' at byte 2`)
	wantCLI(t, h.cli(10*time.Second, "meta", "get", "bad name!", "-servers", all), 2, "service name")
	wantCLI(t, h.cli(10*time.Second, "meta", "set", "db", "-index", "x", "-servers", all), 2, `invalid value "x" for flag -index`)
	wantCLI(t, h.cli(10*time.Second, "meta", "frob", "db"), 2, "want get, set or delete")
	if m := h.metaJSON(all, "db"); m.Index != i3 {
		t.Fatalf("after refused input: index %d, want %d", m.Index, i3)
	}
	// 64 KiB exactly is fine.
	full := filepath.Join(h.dir, "full")
	if err := os.WriteFile(full, bytes.Repeat([]byte("y"), 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	r = h.mustCLI(10*time.Second, "meta", "set", "db", "-index", fmt.Sprint(i3), "-file", full, "-servers", all)
	i4, _ := strconv.ParseUint(strings.TrimSpace(r.stdout), 10, 64)

	// The last instance going away leaves the metadata; services does not list db.
	reg := h.start("register-db", "register", "-servers", all, "-ttl", "3s", "db", "10.0.0.5:5432")
	h.waitServices(all, "db", func(l []instance) bool { return len(l) == 1 }, "the instance")
	reg.signal(t, syscall.SIGTERM)
	if code := reg.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("register exited %d", code)
	}
	h.waitServices(all, "db", func(l []instance) bool { return len(l) == 0 }, "no instance")
	if m := h.metaJSON(all, "db"); m.Index != i4 || m.Size != 64<<10 {
		t.Fatalf("metadata after the last instance went: %+v, want %d bytes at %d", m, 64<<10, i4)
	}
	if list, err := h.serviceCounts(all, "-consistent"); err != nil || slices.ContainsFunc(list, func(s serviceCount) bool { return s.Name == "db" }) {
		t.Fatalf("services lists %v (%v): db has metadata and no instances, it is not listed", list, err)
	}

	// delete: a wrong index conflicts, the right one deletes, then there is nothing.
	wantCLI(t, h.cli(10*time.Second, "meta", "delete", "db", "-index", fmt.Sprint(i1), "-servers", all), 1,
		fmt.Sprintf("it is at index %d now", i4))
	r = h.mustCLI(10*time.Second, "meta", "delete", "db", "-index", fmt.Sprint(i4), "-servers", all)
	if !strings.Contains(r.stdout, "deleted the metadata of db") {
		t.Fatalf("meta delete: %v", r)
	}
	wantCLI(t, h.cli(10*time.Second, "meta", "delete", "db", "-servers", all), 1, "db has no metadata: nothing to delete")
	wantCLI(t, h.cli(10*time.Second, "meta", "set", "db", "-index", fmt.Sprint(i4), "-file", conf, "-servers", all), 1,
		"db has no metadata now: create it with -index 0")

	// The watch saw every change, in order, the delete last.
	var seen []string
	for len(seen) == 0 || seen[len(seen)-1] != "meta deleted" {
		e := w.next(t, 10*time.Second)
		switch {
		case e.Kind == "meta" && e.Deleted:
			seen = append(seen, "meta deleted")
		case e.Kind == "meta":
			seen = append(seen, fmt.Sprintf("meta %d", e.Index))
		default:
			seen = append(seen, e.Kind)
		}
	}
	want := []string{fmt.Sprintf("meta %d", i2), fmt.Sprintf("meta %d", i3), fmt.Sprintf("meta %d", i4), "up", "down", "meta deleted"}
	if !slices.Equal(seen, want) {
		t.Fatalf("watch saw %v, want %v", seen, want)
	}
}
