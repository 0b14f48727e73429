package servertest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB that keeps what Errorf reports.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func stuckStopForTest(release chan struct{}) { <-release }

func TestBounded_AHangingStopFailsWithItsStack(t *testing.T) {
	rec := &recorder{TB: t}
	c := &Cluster{t: rec}
	release := make(chan struct{})
	defer close(release)
	c.bounded("stop n9", 50*time.Millisecond, func() { stuckStopForTest(release) })
	if len(rec.errs) != 1 {
		t.Fatalf("reported %d errors, want 1", len(rec.errs))
	}
	msg := rec.errs[0]
	if !strings.Contains(msg, "stop n9 did not return within 50ms") || !strings.Contains(msg, "servertest.stuckStopForTest") {
		t.Fatalf("report does not name the stop and show where it hangs:\n%s", msg)
	}
}

func TestBounded_AStopThatReturnsReportsNothing(t *testing.T) {
	rec := &recorder{TB: t}
	c := &Cluster{t: rec}
	ran := false
	c.bounded("stop n1", time.Minute, func() { ran = true })
	if !ran || len(rec.errs) != 0 {
		t.Fatalf("ran %v, errors %v", ran, rec.errs)
	}
}
