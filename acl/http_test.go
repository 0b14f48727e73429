package acl

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/discoverd/discoverd/internal/codes"
)

// TestGuardCheckOperator: what a node serves beside the backend (metrics,
// profiler) is checked against the caller's operator rule; before
// bootstrap nobody passes.
func TestGuardCheckOperator(t *testing.T) {
	fx := newGuardFixture(t)
	for who, ok := range map[string]bool{"operator": true, "admin": true, "reader": false, "web": false, "anonymous": false} {
		err := fx.g.CheckOperator(fx.as(who), "reading the metrics", Read)
		if (err == nil) != ok {
			t.Errorf("%s: %v", who, err)
		}
		if err != nil && (!errors.Is(err, codes.ErrPermissionDenied) || !strings.Contains(err.Error(), "operator read")) {
			t.Errorf("%s: %v, want permission_denied naming operator read", who, err)
		}
	}
	if err := fx.g.CheckOperator(fx.as("operator"), "changing things", Write); !errors.Is(err, codes.ErrPermissionDenied) {
		t.Errorf("operator read asking for write: %v", err)
	}
	if !strings.Contains(fx.audit.String(), "changing things") {
		t.Errorf("a denied operator write is not audited:\n%s", fx.audit)
	}
	fx.st.set(NewTable(0, 0, nil))
	if err := fx.g.CheckOperator(context.Background(), "reading the metrics", Read); !errors.Is(err, ErrNotBootstrapped) {
		t.Errorf("before bootstrap: %v", err)
	}
}
