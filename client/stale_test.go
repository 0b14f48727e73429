package client_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/client"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// A ServiceSet when the whole cluster is unreachable: it keeps its state,
// says it is stale, and resyncs when the cluster is back; with
// Config.CacheDir a set of a new client starts from the state saved on disk.

// stopCluster stops every node gracefully: nothing listens any more.
func stopCluster(c *tc.Cluster) {
	for i := range c.Nodes {
		c.Stop(i)
	}
}

// restartCluster starts every node again on its address and data, and waits
// for a leader.
func restartCluster(c *tc.Cluster) {
	for i := range c.Nodes {
		c.Restart(i)
	}
	c.WaitLeader()
}

// waitNotice reads ch until a notice saying stale arrives, and returns the
// instance updates read before it. Unless gone is allowed, an update of an
// instance going away fails the test: a set must not report instances gone
// because the cluster is unreachable.
func waitNotice(t *testing.T, ch <-chan *client.ServiceUpdate, stale, gone bool, timeout time.Duration) []*client.ServiceUpdate {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var before []*client.ServiceUpdate
	for {
		u := recvUpdate(t, ch, time.Until(deadline))
		if u == nil {
			t.Fatal("the updates channel was closed")
		}
		if u.Notice {
			if u.Addr != "" || u.Online || u.Attrs != nil || u.Created != 0 || u.Reason != "" {
				t.Fatalf("notice %+v carries an instance", u)
			}
			if u.Stale == stale {
				return before
			}
			continue
		}
		if u.Addr == "" || u.Stale {
			t.Fatalf("instance update %+v without an address, or saying stale", u)
		}
		if !u.Online && !gone {
			t.Fatalf("update %+v: an instance reported gone while the cluster is unreachable", u)
		}
		before = append(before, u)
	}
}

// expectNoInstanceUpdate fails if ch holds an instance update (notices are
// fine) or was closed.
func expectNoInstanceUpdate(t *testing.T, ch <-chan *client.ServiceUpdate) {
	t.Helper()
	for {
		select {
		case u, ok := <-ch:
			if !ok {
				t.Fatal("the updates channel was closed")
			}
			if !u.Notice {
				t.Fatalf("instance update %+v while the cluster is down", u)
			}
		default:
			return
		}
	}
}

// liveAddrs is the cluster's state of name, read through cl, oldest first.
func liveAddrs(t *testing.T, cl *client.Client, name string) []string {
	t.Helper()
	return serviceAddrs(instances(t, cl, name))
}

// keepsState polls, until the set's LastContact is older than for, that
// the set stays stale and keeps want, its watch still running.
func keepsState(t *testing.T, set *client.ServiceSet, want []string, d time.Duration) {
	t.Helper()
	last := set.LastContact()
	tc.WaitFor(t, d+10*time.Second, fmt.Sprintf("LastContact to be %v old", d), func() bool {
		if !set.Stale() || set.Err() != nil || !slices.Equal(onlineAddrs(set), want) || !set.LastContact().Equal(last) {
			t.Fatalf("while the cluster is down: Stale %v, Err %v, Online %v (want %v), LastContact %v (was %v)",
				set.Stale(), set.Err(), onlineAddrs(set), want, set.LastContact(), last)
		}
		return time.Since(last) > d
	})
}

// TestServiceSet_StaleWhileClusterDown: with every node stopped, a set
// keeps its instances, becomes stale and says so to subscribers; with the
// cluster back it resyncs — a change made right after the restart included
// — and is fresh again, equal to the cluster's state.
func TestServiceSet_StaleWhileClusterDown(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	const name = "stale-down"
	w := c.Client()
	addrs := []string{"10.0.20.1:80", "10.0.20.2:80", "10.0.20.3:80"}
	for _, a := range addrs {
		register(t, w, name, a, map[string]string{"v": "1"}, time.Hour)
	}
	r := newClient(t, client.Config{Servers: nodeAddrs(c.Nodes...)})
	set := services(t, r, name)
	ch := make(chan *client.ServiceUpdate, 256)
	set.Subscribe(ch)
	for range addrs {
		recvUpdate(t, ch, time.Second)
	}
	if set.Stale() || set.LastContact().IsZero() {
		t.Fatalf("a set that just read its state: Stale %v, LastContact %v", set.Stale(), set.LastContact())
	}
	// LastContact follows the watch's stream while it is quiet.
	first := set.LastContact()
	tc.WaitFor(t, 10*time.Second, "LastContact to advance on a quiet stream", func() bool {
		return set.LastContact().After(first) && !set.Stale()
	})

	stopCluster(c)
	stopped := time.Now()
	tc.WaitFor(t, 30*time.Second, "the set to be stale", set.Stale)
	waitNotice(t, ch, true, false, 5*time.Second)
	if lc := set.LastContact(); lc.After(stopped) {
		t.Fatalf("LastContact %v is after the cluster stopped (%v)", lc, stopped)
	}
	// Down for a while — twice the stream idle timeout past the last
	// contact — and nothing is lost.
	keepsState(t, set, addrs, 12*time.Second)
	if l := set.Leader(); l == nil || l.Addr != addrs[0] {
		t.Fatalf("Leader() = %+v while down, want %s", l, addrs[0])
	}
	expectNoInstanceUpdate(t, ch)

	restartCluster(c)
	// Changes the set was away for: registered and unregistered right
	// after the restart, through another client.
	register(t, w, name, "10.0.20.4:80", map[string]string{"v": "2"}, time.Hour)
	unregister(t, w, name, addrs[0])
	want := []string{addrs[1], addrs[2], "10.0.20.4:80"}
	tc.WaitFor(t, 30*time.Second, "the set to be fresh and follow the changes", func() bool {
		return !set.Stale() && slices.Equal(onlineAddrs(set), want)
	})
	if got := liveAddrs(t, w, name); !slices.Equal(got, want) {
		t.Fatalf("cluster state %v, want %v", got, want)
	}
	waitNotice(t, ch, false, true, 10*time.Second)
	if set.Err() != nil {
		t.Fatalf("Err() = %v", set.Err())
	}
	if !set.LastContact().After(stopped) {
		t.Fatalf("LastContact %v not after the restart", set.LastContact())
	}
	if got := offlineAddrs(set); !slices.Equal(got, addrs[:1]) {
		t.Fatalf("Offline() = %v, want %v", got, addrs[:1])
	}
	if s := set.Select(map[string]string{"v": "2"}); len(s) != 1 || s[0].Addr != "10.0.20.4:80" {
		t.Fatalf("Select(v=2) = %v", serviceAddrs(s))
	}
}

// cacheFile is a cache file as a test reads it.
type cacheFile struct {
	Version   int    `json:"version"`
	Name      string `json:"name"`
	Index     uint64 `json:"index"`
	Instances []struct {
		Addr string `json:"addr"`
	} `json:"instances"`
}

// readCache returns the addresses in name's cache file in dir, or an error.
func readCache(dir, name string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(dir, name+".json"))
	if err != nil {
		return nil, err
	}
	var cf cacheFile
	if err := json.Unmarshal(data, &cf); err != nil {
		return nil, err
	}
	if cf.Name != name || cf.Version != 1 || cf.Index == 0 {
		return nil, fmt.Errorf("cache file of %q, version %d, index %d", cf.Name, cf.Version, cf.Index)
	}
	out := []string{}
	for _, in := range cf.Instances {
		out = append(out, in.Addr)
	}
	return out, nil
}

// TestServiceSet_CacheDir: a set saves its state as it changes and on
// Close; with the cluster stopped, a new client's Services starts from it,
// stale, and resyncs when the cluster is back. A reachable cluster's state
// wins over the file.
func TestServiceSet_CacheDir(t *testing.T) {
	c := tc.New(t, tc.Options{Nodes: 3})
	const name = "stale-cache"
	dir := filepath.Join(t.TempDir(), "cache") // created by the client
	w := c.Client()
	addrs := []string{"10.0.21.1:80", "10.0.21.2:80", "10.0.21.3:80"}
	for _, a := range addrs[:2] {
		register(t, w, name, a, nil, time.Hour)
	}
	cfg := client.Config{Servers: nodeAddrs(c.Nodes...), CacheDir: dir}
	first := newClient(t, cfg)
	set := services(t, first, name)
	// Saved as it changes, not only on Close.
	register(t, w, name, addrs[2], map[string]string{"zone": "a"}, time.Hour)
	tc.WaitFor(t, 10*time.Second, "the cache file to hold the change", func() bool {
		got, err := readCache(dir, name)
		return err == nil && slices.Equal(got, addrs)
	})
	set.Close()
	fi, err := os.Stat(filepath.Join(dir, name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file mode %v, want 0600", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	stopCluster(c)
	second := newClient(t, cfg)
	cached := services(t, second, name) // fails without the cache: nothing listens
	if got := onlineAddrs(cached); !slices.Equal(got, addrs) {
		t.Fatalf("Online() from the cache = %v, want %v", got, addrs)
	}
	if !cached.Stale() || cached.LastContact().IsZero() || cached.Err() != nil {
		t.Fatalf("set from the cache: Stale %v, LastContact %v, Err %v", cached.Stale(), cached.LastContact(), cached.Err())
	}
	if s := cached.Select(map[string]string{"zone": "a"}); len(s) != 1 || s[0].Addr != addrs[2] {
		t.Fatalf("Select(zone=a) from the cache = %v", serviceAddrs(s))
	}
	ch := make(chan *client.ServiceUpdate, 64)
	cached.Subscribe(ch)
	if got := waitNotice(t, ch, true, false, time.Second); len(got) != len(addrs) {
		t.Fatalf("subscriber got %d instances before the stale notice, want %d", len(got), len(addrs))
	}

	restartCluster(c)
	register(t, w, name, "10.0.21.4:80", nil, time.Hour)
	unregister(t, w, name, addrs[0])
	want := []string{addrs[1], addrs[2], "10.0.21.4:80"}
	tc.WaitFor(t, 30*time.Second, "the set from the cache to be fresh and equal to the cluster", func() bool {
		return !cached.Stale() && slices.Equal(onlineAddrs(cached), want)
	})
	if got := liveAddrs(t, w, name); !slices.Equal(got, want) {
		t.Fatalf("cluster state %v, want %v", got, want)
	}
	waitNotice(t, ch, false, true, 10*time.Second)
	cached.Close()
	if got, err := readCache(dir, name); err != nil || !slices.Equal(got, want) {
		t.Fatalf("cache file after Close: %v, %v; want %v", got, err, want)
	}

	// The cluster is reachable: the file is not used, even when it lies.
	path := filepath.Join(dir, name+".json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lie := strings.Replace(string(data), `"addr":"10.0.21.4:80"`, `"addr":"10.9.9.9:80"`, 1)
	if lie == string(data) {
		t.Fatalf("no instance to alter in %s", data)
	}
	if err := os.WriteFile(path, []byte(lie), 0o600); err != nil {
		t.Fatal(err)
	}
	live := services(t, newClient(t, cfg), name)
	if got := onlineAddrs(live); live.Stale() || !slices.Equal(got, want) {
		t.Fatalf("with the cluster up: Online %v, Stale %v; want the live %v", got, live.Stale(), want)
	}
}

// logBuffer collects a logger's output; safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServiceSet_DamagedCacheIgnored: with nothing listening, a valid cache
// file gives a stale set, and a damaged one, one of another service or
// with an invalid instance is ignored with a warning: Services fails as it
// would without a cache.
func TestServiceSet_DamagedCacheIgnored(t *testing.T) {
	const name = "stale-damaged"
	valid := `{"version":1,"name":"stale-damaged","index":9,"last_contact":"2026-01-02T03:04:05Z",` +
		`"instances":[{"addr":"10.0.22.1:80","attrs":{"zone":"a"},"ttl_ms":10000,"create_index":4,"index":7}]}`
	dir := t.TempDir()
	path := filepath.Join(dir, name+".json")
	logs := &logBuffer{}
	cl := newClient(t, client.Config{Servers: []string{closedAddr(t)}, CacheDir: dir,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})

	if err := os.WriteFile(path, []byte(valid), 0o600); err != nil {
		t.Fatal(err)
	}
	set := services(t, cl, name)
	if got := onlineAddrs(set); !set.Stale() || !slices.Equal(got, []string{"10.0.22.1:80"}) || set.Index() != 9 {
		t.Fatalf("set from a valid cache file: Online %v, Stale %v, Index %d", got, set.Stale(), set.Index())
	}
	if want := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC); !set.LastContact().Equal(want) {
		t.Fatalf("LastContact() = %v, want the cached %v", set.LastContact(), want)
	}
	set.Close()

	// The metadata is cached too.
	withMeta := strings.Replace(valid, `"instances":`, `"meta":{"data":"AAH/","index":8},"instances":`, 1)
	if err := os.WriteFile(path, []byte(withMeta), 0o600); err != nil {
		t.Fatal(err)
	}
	set = services(t, cl, name)
	if m := set.Meta(); m.Index != 8 || !slices.Equal(m.Data, []byte{0, 1, 0xff}) || !set.Stale() {
		t.Fatalf("metadata from the cache file: %+v (stale %v)", m, set.Stale())
	}
	set.Close()

	for _, tt := range []struct{ what, content string }{
		{"metadata newer than the state", strings.Replace(valid, `"instances":`, `"meta":{"data":"","index":90},"instances":`, 1)},
		{"garbage", "\x00\x01 not json at all"},
		{"truncated", valid[:len(valid)/2]},
		{"empty", ""},
		{"trailing data", valid + `{"version":1}`},
		{"of another service", strings.Replace(valid, `"name":"stale-damaged"`, `"name":"other"`, 1)},
		{"another version", strings.Replace(valid, `"version":1`, `"version":2`, 1)},
		{"an invalid address", strings.Replace(valid, `"10.0.22.1:80"`, `"10.0.22.1"`, 1)},
		{"an instance newer than the state", strings.Replace(valid, `"index":7`, `"index":70`, 1)},
		{"an unknown field", strings.Replace(valid, `"index":9`, `"index":9,"trusted":true`, 1)},
	} {
		t.Run(tt.what, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			before := strings.Count(logs.String(), "ignoring the cache file")
			set, err := cl.Services(name)
			if err == nil {
				set.Close()
				t.Fatalf("Services with a cache file %s: a set holding %v, want an error", tt.what, onlineAddrs(set))
			}
			if !errors.Is(err, client.ErrUnavailable) {
				t.Fatalf("Services: %v, want ErrUnavailable", err)
			}
			if got := strings.Count(logs.String(), "ignoring the cache file"); got != before+1 {
				t.Fatalf("%d warnings about the cache file, want 1; log:\n%s", got-before, logs.String())
			}
		})
	}
}
