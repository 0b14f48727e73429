package rpc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

// A backend without members (the etcd front end) refuses both membership
// methods with a reason, and a body that is not the method's is refused
// before anything reaches a backend.
func TestRPC_MembershipOnABackendWithoutMembersIsRefused(t *testing.T) {
	addr, _ := startServer(t, Config{})
	c := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ms wire.MembersResponse
	err := c.Call(ctx, wire.MethodMembers, false, &wire.Empty{}, &ms)
	if !errors.Is(err, codes.ErrRefused) || !strings.Contains(err.Error(), "etcd") {
		t.Errorf("Members: %v, want refused naming etcd", err)
	}
	var ch wire.ChangeMemberResponse
	err = c.Call(ctx, wire.MethodChangeMember, false, &wire.ChangeMemberRequest{Op: wire.MemberRemove, ID: "n2"}, &ch)
	if !errors.Is(err, codes.ErrRefused) {
		t.Errorf("ChangeMember: %v, want refused", err)
	}
}
