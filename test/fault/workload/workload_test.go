package workload

import (
	"context"
	"fmt"
	"testing"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/test/fault/history"
)

// A read or write a node refused — down, not caught up since it started,
// behind the client — definitely had no effect: fail. Only an answer lost
// after sending is unknown.
func TestOutcome(t *testing.T) {
	cases := []struct {
		err  error
		want history.Outcome
		code string
	}{
		{nil, history.OK, ""},
		{codes.FromWire(codes.CodeNotReady, "node n2 has not caught up with the cluster since it started"), history.Fail, "not_ready"},
		{codes.FromWire(codes.CodeStaleNode, ""), history.Fail, "stale_node"},
		{fmt.Errorf("dial 127.0.0.1:1: refused: %w", codes.ErrUnavailable), history.Fail, "unavailable"},
		{codes.FromWire(codes.CodeNotFound, ""), history.Fail, "not_found"},
		{fmt.Errorf("List to n1: connection reset before the answer: %w", codes.ErrUnknownOutcome), history.Unknown, "unknown_outcome"},
		{fmt.Errorf("List to n1: no answer: %w", context.DeadlineExceeded), history.Unknown, "timeout"},
	}
	for _, c := range cases {
		out, code, _ := outcome(c.err)
		if out != c.want || code != c.code {
			t.Errorf("outcome(%v) = %s %q, want %s %q", c.err, out, code, c.want, c.code)
		}
	}
}
