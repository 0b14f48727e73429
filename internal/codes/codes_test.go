package codes_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/internal/codes"
)

// all lists every sentinel with its code, as clients in other languages see them.
var all = []struct {
	err  *codes.Error
	code codes.Code
}{
	{codes.ErrInvalidArgument, "invalid_argument"},
	{codes.ErrNotFound, "not_found"},
	{codes.ErrNoLeader, "no_leader"},
	{codes.ErrNotLeader, "not_leader"},
	{codes.ErrUnknownOutcome, "unknown_outcome"},
	{codes.ErrStaleNode, "stale_node"},
	{codes.ErrTooLarge, "too_large"},
	{codes.ErrTimeout, "timeout"},
	{codes.ErrShuttingDown, "shutting_down"},
	{codes.ErrUnknownMethod, "unknown_method"},
	{codes.ErrUnavailable, "unavailable"},
	{codes.ErrResourceExhausted, "resource_exhausted"},
	{codes.ErrConflict, "conflict"},
	{codes.ErrRefused, "refused"},
	{codes.ErrPermissionDenied, "permission_denied"},
	{codes.ErrInternal, "internal"},
}

func TestCodes_SentinelsHaveStableDistinctCodes(t *testing.T) {
	seen := map[codes.Code]bool{}
	for _, c := range all {
		if c.err.Code() != c.code {
			t.Errorf("%v: code %q, want %q (codes are wire-visible: never rename)", c.err, c.err.Code(), c.code)
		}
		if seen[c.code] {
			t.Errorf("code %q used twice", c.code)
		}
		seen[c.code] = true
		if msg := c.err.Error(); msg == "" || msg != strings.ToLower(msg) || strings.ContainsAny(msg, ".!") {
			t.Errorf("%q: want a lowercase message without punctuation", msg)
		}
	}
}

func TestCodes_RoundTripEveryCode(t *testing.T) {
	for _, c := range all {
		t.Run(string(c.code), func(t *testing.T) {
			if got := codes.Of(c.err); got != c.code {
				t.Errorf("Of(sentinel) = %q", got)
			}
			wrapped := fmt.Errorf("register web: %w", fmt.Errorf("deeper: %w", c.err))
			if got := codes.Of(wrapped); got != c.code {
				t.Errorf("Of(wrapped) = %q", got)
			}
			if got := codes.Sentinel(c.code); got != c.err {
				t.Errorf("Sentinel(%q) = %v", c.code, got)
			}

			// What the server writes, the client rebuilds: same code,
			// same message, and errors.Is finds the sentinel.
			back := codes.FromWire(codes.Of(wrapped), wrapped.Error())
			if !errors.Is(back, c.err) {
				t.Errorf("FromWire: errors.Is(%v, sentinel) is false", back)
			}
			if back.Error() != wrapped.Error() {
				t.Errorf("FromWire message = %q, want %q", back.Error(), wrapped.Error())
			}
			if got := codes.Of(back); got != c.code {
				t.Errorf("Of(FromWire) = %q", got)
			}
			for _, other := range all {
				if other.err != c.err && errors.Is(back, other.err) {
					t.Errorf("FromWire(%q) also matches %v", c.code, other.err)
				}
			}

			if c.code == codes.CodeConflict {
				return // always a *ConflictError: TestCodes_ConflictCarriesTheCurrentIndex
			}
			// The bare sentinel's message or none gives the sentinel itself.
			if got := codes.FromWire(c.code, ""); got != c.err {
				t.Errorf("FromWire(%q, \"\") = %#v, want the sentinel", c.code, got)
			}
			if got := codes.FromWire(c.code, c.err.Error()); got != c.err {
				t.Errorf("FromWire(%q, its own message) = %#v, want the sentinel", c.code, got)
			}
		})
	}
}

func TestCodes_OK(t *testing.T) {
	if got := codes.Of(nil); got != codes.CodeOK {
		t.Errorf("Of(nil) = %q", got)
	}
	if err := codes.FromWire(codes.CodeOK, ""); err != nil {
		t.Errorf("FromWire(ok) = %v", err)
	}
	if err := codes.FromWire(codes.CodeOK, "stray message"); err != nil {
		t.Errorf("FromWire(ok, message) = %v, want nil: an empty code is success", err)
	}
}

func TestCodes_OfForeignErrors(t *testing.T) {
	cases := []struct {
		err  error
		want codes.Code
	}{
		{context.DeadlineExceeded, codes.CodeTimeout},
		{fmt.Errorf("wait for leader: %w", context.DeadlineExceeded), codes.CodeTimeout},
		{errors.New("disk on fire"), codes.CodeInternal},
		{io.EOF, codes.CodeInternal},
		{context.Canceled, codes.CodeInternal},
		// A sentinel wins over a deadline further down the chain.
		{fmt.Errorf("%w: %w", codes.ErrUnknownOutcome, context.DeadlineExceeded), codes.CodeUnknownOutcome},
	}
	for _, c := range cases {
		if got := codes.Of(c.err); got != c.want {
			t.Errorf("Of(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestCodes_UnknownCodeIsInternal(t *testing.T) {
	if got := codes.Sentinel("no_such_code"); got != codes.ErrInternal {
		t.Errorf("Sentinel(unknown) = %v, want ErrInternal", got)
	}
	err := codes.FromWire("from_the_future", "something new happened")
	if !errors.Is(err, codes.ErrInternal) {
		t.Errorf("FromWire(unknown) = %v, want it to wrap ErrInternal", err)
	}
	if err.Error() != "something new happened" {
		t.Errorf("FromWire(unknown) message = %q, want the server's", err)
	}
	if got := codes.FromWire("from_the_future", ""); got != codes.ErrInternal {
		t.Errorf("FromWire(unknown, \"\") = %v, want ErrInternal", got)
	}
}

func TestCodes_RetryableAndNotApplied(t *testing.T) {
	// The table of docs/protocol.md section 9.
	cases := []struct {
		err        error
		retryable  bool
		notApplied bool
	}{
		{codes.ErrInvalidArgument, false, true},
		{codes.ErrNotFound, false, true},
		{codes.ErrNoLeader, true, true},
		{codes.ErrNotLeader, true, true},
		{codes.ErrUnknownOutcome, true, false},
		{codes.ErrStaleNode, true, true},
		{codes.ErrTooLarge, false, true},
		{codes.ErrTimeout, true, false},
		{codes.ErrShuttingDown, true, true},
		{codes.ErrUnknownMethod, false, true},
		{codes.ErrUnavailable, true, true},
		{codes.ErrResourceExhausted, false, true},
		{codes.ErrConflict, false, true},
		{codes.Conflict(7, "set"), false, true},
		{codes.ErrRefused, false, true},
		{codes.ErrPermissionDenied, false, true},
		{codes.ErrInternal, false, false},
		{nil, false, false},
		{errors.New("anything else"), false, false},
		{context.DeadlineExceeded, true, false},
	}
	for _, c := range cases {
		for _, err := range []error{c.err, wrapIfNotNil(c.err), codes.FromWire(codes.Of(c.err), "from the server")} {
			if got := codes.Retryable(err); got != c.retryable {
				t.Errorf("Retryable(%v) = %v, want %v", err, got, c.retryable)
			}
			if got := codes.NotApplied(err); got != c.notApplied {
				t.Errorf("NotApplied(%v) = %v, want %v", err, got, c.notApplied)
			}
		}
	}
	if len(cases) < len(all) {
		t.Fatalf("table misses codes")
	}
}

func wrapIfNotNil(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("call: %w", err)
}

func TestCodes_Invalid(t *testing.T) {
	err := codes.Invalid("name %q is %d bytes", "web", 3)
	if !errors.Is(err, codes.ErrInvalidArgument) || codes.Of(err) != codes.CodeInvalidArgument {
		t.Errorf("Invalid: %v does not wrap ErrInvalidArgument", err)
	}
	if want := `name "web" is 3 bytes: invalid argument`; err.Error() != want {
		t.Errorf("Invalid message = %q, want %q", err, want)
	}
	back := codes.FromWire(codes.Of(err), err.Error())
	if !errors.Is(back, codes.ErrInvalidArgument) || back.Error() != err.Error() {
		t.Errorf("over the wire: %v", back)
	}
}

func TestCodes_ConflictCarriesTheCurrentIndex(t *testing.T) {
	err := fmt.Errorf("set metadata of db: %w", codes.Conflict(42, "expected index %d", 40))
	if !errors.Is(err, codes.ErrConflict) || codes.Of(err) != codes.CodeConflict {
		t.Fatalf("%v: not a conflict", err)
	}
	if want := "set metadata of db: expected index 40, but the metadata is at index 42: metadata index does not match"; err.Error() != want {
		t.Errorf("message = %q, want %q", err, want)
	}
	if idx, ok := codes.ConflictIndex(err); !ok || idx != 42 {
		t.Errorf("ConflictIndex = %d, %v; want 42, true", idx, ok)
	}
	none := codes.Conflict(0, "expected index 3")
	if !strings.Contains(none.Error(), "there is no metadata") {
		t.Errorf("a conflict with no metadata says %q", none)
	}
	if idx, ok := codes.ConflictIndex(none); !ok || idx != 0 {
		t.Errorf("ConflictIndex(none) = %d, %v; want 0, true", idx, ok)
	}

	// Across the wire: the index travels beside the code and message.
	back := codes.FromWireIndex(codes.Of(err), err.Error(), 42)
	if idx, ok := codes.ConflictIndex(back); !ok || idx != 42 || back.Error() != err.Error() || !errors.Is(back, codes.ErrConflict) {
		t.Errorf("FromWireIndex: %v (index %d, %v)", back, idx, ok)
	}
	if bare := codes.FromWireIndex(codes.CodeConflict, "", 9); !strings.Contains(bare.Error(), "index 9") {
		t.Errorf("a conflict without a message says %q, want its index", bare)
	}
	// Other codes ignore the index; a bare sentinel is a conflict of index 0.
	if got := codes.FromWireIndex(codes.CodeNotFound, "", 42); got != codes.ErrNotFound {
		t.Errorf("FromWireIndex(not_found) = %v", got)
	}
	if idx, ok := codes.ConflictIndex(codes.ErrConflict); !ok || idx != 0 {
		t.Errorf("ConflictIndex(ErrConflict) = %d, %v", idx, ok)
	}
	if _, ok := codes.ConflictIndex(codes.ErrNotFound); ok {
		t.Errorf("ConflictIndex(not_found) says conflict")
	}
}
