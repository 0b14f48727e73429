package client

import (
	"bytes"
	"context"
	"fmt"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/validate"
	"github.com/discoverd/discoverd/internal/wire"
)

// Service metadata: one blob per service that services coordinate through —
// a database primary's configuration, a shard map — up to 64 KiB, changed
// only by compare-and-set on its index.
//
//	m, err := c.GetMeta(ctx, "db", client.MetaOptions{Consistent: true})
//	idx, err := c.SetMeta(ctx, "db", newConfig, m.Index) // only if nobody changed it since
//	if cur, ok := client.ConflictIndex(err); ok {
//		// somebody did (it is at cur now): read it again and decide
//	}
//
// Metadata belongs to the service, not to an instance: it stays when the
// service's last instance goes away, until DeleteMeta. A ServiceSet follows
// it too (ServiceSet.Meta, and updates with MetaChange for subscribers).

// MaxMetaBytes is the most data a service's metadata may hold: 64 KiB.
const MaxMetaBytes = validate.MaxMetaBytes

// ErrConflict: a compare-and-set of a service's metadata found it at
// another index than the one given (or found some when 0 asked for none);
// nothing changed. ConflictIndex says where it is now.
var ErrConflict = codes.ErrConflict

// ConflictIndex returns the index the service's metadata is at now (0: it
// has none), as a conflict reports it, and whether err is a conflict at
// all. Read the metadata again (GetMeta never answers older than that
// index on this client) and retry with it.
func ConflictIndex(err error) (uint64, bool) { return codes.ConflictIndex(err) }

// Meta is a service's metadata.
type Meta struct {
	Data []byte
	// Index is the index of the write that set it; give it to SetMeta or
	// DeleteMeta to change exactly this version. 0: the service has none.
	Index uint64
}

// Equal reports whether m and o are the same metadata (index and data).
func (m Meta) Equal(o Meta) bool { return m.Index == o.Index && bytes.Equal(m.Data, o.Data) }

// MetaOptions shape GetMeta.
type MetaOptions struct {
	// Consistent makes the read linearizable (served by the confirmed leader).
	Consistent bool
}

// SetMeta sets service name's metadata to data if it is at expectIndex now
// — 0: only if the service has none — and returns the new metadata's index
// (the index of the write). Otherwise it fails with ErrConflict and
// ConflictIndex(err) is the index the metadata is at. data is at most
// MaxMetaBytes (64 KiB); more fails with ErrTooLarge, nothing sent. Like
// every write it carries a request id, so a retry after a lost answer is
// applied once and answered as the first attempt was.
func (c *Client) SetMeta(ctx context.Context, name string, data []byte, expectIndex uint64) (uint64, error) {
	if err := validate.Meta(name, data); err != nil {
		return 0, err
	}
	var resp wire.WriteResponse
	req := &wire.SetMetaRequest{Name: name, Data: data, ExpectIndex: expectIndex, RequestID: newRequestID()}
	if err := c.call(ctx, wire.MethodSetMeta, req, &resp); err != nil {
		return 0, c.metaErr(err)
	}
	c.observe(resp.Index)
	return resp.Index, nil
}

// DeleteMeta deletes service name's metadata: if expectIndex is not 0,
// only if it is at that index (else ErrConflict, as SetMeta); if it is 0,
// whatever its index (ErrNotFound if there is none). It returns the index
// of the delete. The service's instances are untouched.
func (c *Client) DeleteMeta(ctx context.Context, name string, expectIndex uint64) (uint64, error) {
	if err := validate.Name(name); err != nil {
		return 0, err
	}
	var resp wire.WriteResponse
	req := &wire.DeleteMetaRequest{Name: name, ExpectIndex: expectIndex, RequestID: newRequestID()}
	if err := c.call(ctx, wire.MethodDeleteMeta, req, &resp); err != nil {
		return 0, c.metaErr(err)
	}
	c.observe(resp.Index)
	return resp.Index, nil
}

// metaErr returns a failed meta write's error; a conflict's current index
// counts as seen, so the read that follows it is at least as new.
func (c *Client) metaErr(err error) error {
	if idx, ok := codes.ConflictIndex(err); ok {
		c.observe(idx)
	}
	return err
}

// GetMeta reads service name's metadata (Index 0: it has none). Like
// Instances, it is never served from a state older than LastIndex — so
// after a conflict it sees at least the metadata the conflict reported.
func (c *Client) GetMeta(ctx context.Context, name string, opts MetaOptions) (Meta, error) {
	if err := validate.Name(name); err != nil {
		return Meta{}, err
	}
	var resp wire.GetMetaResponse
	req := &wire.GetMetaRequest{Name: name, Consistent: opts.Consistent, MinIndex: c.LastIndex()}
	if err := c.call(ctx, wire.MethodGetMeta, req, &resp); err != nil {
		return Meta{}, fmt.Errorf("get metadata of %s: %w", name, err)
	}
	c.observe(resp.Index)
	m := Meta{Index: resp.MetaIndex}
	if m.Index != 0 && len(resp.Data) > 0 {
		m.Data = resp.Data
	}
	return m, nil
}
