package raftstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend"
	"github.com/discoverd/discoverd/internal/codes"
	tc "github.com/discoverd/discoverd/server/servertest"
)

// TestRaftStore_RestoreWhileWritesGoOn: a backup restored into the running
// cluster it came from while writers register all the while. The restore
// succeeds; no write fails but by waiting too long for the fence
// (overloaded, not applied); each writer's acknowledged indices keep
// growing across the restore — the restored state's index is past every
// index acknowledged before it; and every node ends at one state, holding
// the backup's instances and the writes acknowledged after the restore.
func TestRaftStore_RestoreWhileWritesGoOn(t *testing.T) {
	c := tc.New(t, tc.Options{})
	leader := c.WaitLeader()
	st := leader.Srv.Store()
	ctx := tc.Context(t, time.Minute)
	for i := range 5 {
		if _, err := st.Register(ctx, backend.Registration{Name: "web", Addr: fmt.Sprintf("10.0.0.%d:80", i+1), TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	sf, err := st.SaveSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	file, err := io.ReadAll(sf)
	_ = sf.Close()
	if err != nil || int64(len(file)) != sf.Size {
		t.Fatalf("read the backup: %d of %d bytes, %v", len(file), sf.Size, err)
	}

	type write struct {
		index    uint64
		after    bool // acknowledged after the restore returned
		instance string
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		writes   = map[int][]write{}
		restored = make(chan struct{})
		stop     = make(chan struct{})
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				after := false
				select {
				case <-restored:
					after = true
				default:
				}
				addr := fmt.Sprintf("10.1.%d.%d:80", w, i%250+1)
				idx, err := st.Register(ctx, backend.Registration{Name: fmt.Sprintf("writer%d", w), Addr: addr, TTL: time.Hour})
				if err != nil && !errors.Is(err, codes.ErrOverloaded) {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				if err == nil {
					mu.Lock()
					writes[w] = append(writes[w], write{idx, after, addr})
					mu.Unlock()
				}
			}
		}()
	}
	tc.WaitFor(t, 10*time.Second, "writes before the restore", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(writes[0]) >= 5
	})
	res, err := st.RestoreSnapshot(ctx, bytes.NewReader(file), int64(len(file)), backend.RestoreOptions{})
	close(restored)
	if err != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("restore: %v", err)
	}
	tc.WaitFor(t, 10*time.Second, "writes after the restore", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(writes[0]) > 0 && writes[0][len(writes[0])-1].after
	})
	close(stop)
	wg.Wait()

	if res.Instances != 5 || res.Index <= res.SnapshotIndex {
		t.Errorf("restore = %+v, want 5 instances at an index past the backup's", res)
	}
	var last write
	for w, ws := range writes {
		for i := 1; i < len(ws); i++ {
			if ws[i].index <= ws[i-1].index {
				t.Errorf("writer %d: write %d acknowledged at index %d, after one at %d: indices went back", w, i, ws[i].index, ws[i-1].index)
			}
		}
		for _, x := range ws {
			if x.after && x.index <= res.Index {
				t.Errorf("writer %d: a write after the restore at index %d, not past the restored %d", w, x.index, res.Index)
			}
		}
		last = ws[len(ws)-1]
		if !last.after {
			t.Fatalf("writer %d: no write after the restore", w)
		}
	}
	fsm := leader.Srv.FSM()
	if fsm.Get("web", "10.0.0.3:80") == nil || fsm.Get("writer0", writes[0][len(writes[0])-1].instance) == nil {
		t.Errorf("after the restore the leader lacks the backup's web 10.0.0.3:80 or writer0's last write")
	}
	tc.WaitFor(t, 15*time.Second, "every node at the leader's state", func() bool {
		idx, hash := fsm.Hash()
		for _, n := range c.Running() {
			if i, h := n.Srv.FSM().Hash(); i != idx || h != hash {
				return false
			}
		}
		return true
	})
}
