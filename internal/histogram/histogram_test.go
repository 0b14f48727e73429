package histogram

import (
	"slices"
	"sync"
	"testing"
)

func TestHistogram_CountsIntoInclusiveBuckets(t *testing.T) {
	h := New(1, 10, 100)
	for _, v := range []uint64{0, 1, 2, 10, 11, 100, 101, 5000} {
		h.Observe(v)
	}
	s := h.Snapshot()
	if want := []uint64{2, 4, 6}; !slices.Equal(s.Cumulative, want) {
		t.Fatalf("cumulative %v, want %v", s.Cumulative, want)
	}
	if s.Count != 8 || s.Sum != 0+1+2+10+11+100+101+5000 {
		t.Fatalf("count %d sum %d", s.Count, s.Sum)
	}
}

func TestHistogram_ConcurrentObservationsAllCount(t *testing.T) {
	h := New(Exponential(1, 2, 10)...)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				h.Observe(uint64(g*1000 + i))
			}
		}()
	}
	wg.Wait()
	s := h.Snapshot()
	if s.Count != 8000 {
		t.Fatalf("count %d, want 8000", s.Count)
	}
	if want := uint64(8000 * 7999 / 2); s.Sum != want {
		t.Fatalf("sum %d, want %d", s.Sum, want)
	}
}

func TestHistogram_ObserveAllocatesNothing(t *testing.T) {
	h := New(Exponential(100, 2, 16)...)
	if n := testing.AllocsPerRun(1000, func() { h.Observe(12345) }); n != 0 {
		t.Fatalf("Observe allocates %v times", n)
	}
	var nilH *Histogram
	nilH.Observe(1) // a histogram that is off
}

func TestHistogram_NewRefusesUnsortedBounds(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New(10, 5) did not panic")
		}
	}()
	New(10, 5)
}

func TestHistogram_Exponential(t *testing.T) {
	if got, want := Exponential(1, 4, 4), []uint64{1, 4, 16, 64}; !slices.Equal(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}
