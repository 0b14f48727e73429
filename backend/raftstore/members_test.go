package raftstore

import (
	"errors"
	"testing"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
)

func TestValidateChange(t *testing.T) {
	ok := []wire.ChangeMemberRequest{
		{Op: wire.MemberAdd, ID: "n4", Addr: "10.0.0.4:1111"},
		{Op: wire.MemberAdd, ID: "n4", Addr: "n4.discoverd.svc:1111", NonVoter: true},
		{Op: wire.MemberRemove, ID: "n2", Force: true},
		{Op: wire.MemberPromote, ID: "n4"},
		{Op: wire.MemberDemote, ID: "n3"},
	}
	for _, r := range ok {
		if err := validateChange(r); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	bad := []wire.ChangeMemberRequest{
		{Op: "join", ID: "n4", Addr: "10.0.0.4:1111"},
		{Op: wire.MemberAdd, ID: "n4"},
		{Op: wire.MemberAdd, ID: "n4", Addr: "10.0.0.4"},
		{Op: wire.MemberAdd, ID: "bad id", Addr: "10.0.0.4:1111"},
		{Op: wire.MemberAdd, ID: "", Addr: "10.0.0.4:1111"},
		{Op: wire.MemberRemove, ID: "n2", Addr: "10.0.0.2:1111"},
		{Op: wire.MemberPromote, ID: "n2", NonVoter: true},
	}
	for _, r := range bad {
		if err := validateChange(r); !errors.Is(err, codes.ErrInvalidArgument) {
			t.Errorf("%+v: %v, want invalid_argument", r, err)
		}
	}
}
