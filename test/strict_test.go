package test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/rpcconn"
	"github.com/discoverd/discoverd/internal/wire"
)

// TestStrict_NodesRefuseWhatIsNotText: a real node refuses, with
// invalid_argument, registrations whose address or attributes are not
// UTF-8 text, whose keys hold '=' or control characters, and request bodies
// that are not maps — and stores none of them.
func TestStrict_NodesRefuseWhatIsNotText(t *testing.T) {
	h := newHarness(t)
	c := h.startCluster(3)
	all := c.servers()
	h.waitStable(all, c.ids(), 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := rpcconn.Dial(ctx, c.nodes[0].addr, rpcconn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for what, req := range map[string]any{
		"an address that is not UTF-8":         &wire.RegisterRequest{Name: "strict", Addr: "h\xff:80"},
		"an attribute value that is not UTF-8": &wire.RegisterRequest{Name: "strict", Addr: "h:80", Attrs: map[string]string{"k": "\xc3"}},
		"an attribute key with =":              &wire.RegisterRequest{Name: "strict", Addr: "h:80", Attrs: map[string]string{"a=b": "v"}},
		"a control character in a key":         &wire.RegisterRequest{Name: "strict", Addr: "h:80", Attrs: map[string]string{"a\x1b": "v"}},
		"a body that is an array":              []any{"strict", "h:80", map[string]string{}, 0, ""},
	} {
		var resp wire.WriteResponse
		err := conn.Call(ctx, wire.MethodRegister, false, req, &resp)
		if !errors.Is(err, codes.ErrInvalidArgument) {
			t.Errorf("%s: %v, want invalid_argument", what, err)
		} else if !strings.Contains(err.Error(), "at byte") && !strings.Contains(err.Error(), "not a map") {
			t.Errorf("%s: %q does not say where", what, err)
		}
	}
	if l, err := h.services(all, "strict"); err != nil || len(l) != 0 {
		t.Errorf("after the refusals: %v %v", l, err)
	}
}
