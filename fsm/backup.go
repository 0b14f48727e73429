package fsm

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/validate"
)

// Backups. A backup's body is a snapshot as Persist writes it. Before a
// node hands one to Raft to restore, PrepareRestore reads it through once:
// Raft's restore panics when the state machine cannot restore what it was
// given (and every follower installing it would too), so everything that
// Restore relies on is checked first, and nothing changes when it is not as
// it should be.

// SnapshotSummary counts what a snapshot holds.
type SnapshotSummary struct {
	Version   int    // the snapshot's format (1; 2 with metadata; 3 with ACLs)
	Applied   uint64 // the index of the last change in it
	Services  int    // services it holds, with instances, metadata or only a history
	Instances int    // instances of all services
	Meta      int    // services with metadata
	Requests  int    // write request ids remembered
	ACLTokens int    // ACL tokens; 0: ACLs not bootstrapped
}

// RestoreOptions say where a restored state's index goes.
type RestoreOptions struct {
	// Current is the index the cluster restored into is at now: the
	// restored state's index must be beyond it, or clients that have seen
	// it would wait for a state that has it (min_index), and watchers would
	// resume from histories that never held the changes they saw.
	Current uint64
	// Bump raises the restored state's index by this much beyond the
	// snapshot's: past the changes a lost cluster may have shown clients
	// after the backup was taken.
	Bump uint64
}

// ErrBadSnapshot is wrapped by every error about a snapshot's content: it
// cannot be decoded, is of an unknown format, or holds values a state never
// holds. It wraps codes.ErrInvalidArgument.
var ErrBadSnapshot = fmt.Errorf("snapshot content refused: %w", codes.ErrInvalidArgument)

// SummarizeSnapshot checks a snapshot as PrepareRestore does and counts
// what it holds.
func SummarizeSnapshot(r io.Reader) (SnapshotSummary, error) {
	sum, _, err := prepare(r, nil, RestoreOptions{})
	return sum, err
}

// ErrWrite is wrapped by PrepareRestore's errors that come from writing
// to w: the snapshot is not at fault.
var ErrWrite = errors.New("write the snapshot to restore")

// PrepareRestore reads a snapshot from r, checks it, and writes to w the
// snapshot to restore, returning what it holds and the index the restored
// state will be at. That is max(its index + Bump, Current + 1) when Current
// has reached its index or Bump is set; then every service's history, and
// the memory of forgotten services, end at that index, so a watcher
// resuming from before it resyncs instead of missing what the restore
// replaced. Otherwise it is the snapshot's index, and the bytes describe
// the snapshot's state exactly. It reads one service at a time: memory
// stays bounded by the largest service.
func PrepareRestore(r io.Reader, w io.Writer, opts RestoreOptions) (sum SnapshotSummary, index uint64, err error) {
	return prepare(r, w, opts)
}

func prepare(r io.Reader, w io.Writer, opts RestoreOptions) (SnapshotSummary, uint64, error) {
	dec := codec.NewDecoder(bufio.NewReaderSize(r, 256<<10), codecHandle)
	var hdr snapshotHeader
	if err := dec.Decode(&hdr); err != nil {
		return SnapshotSummary{}, 0, fmt.Errorf("decode its header: %v: %w", err, ErrBadSnapshot)
	}
	if err := checkHeader(&hdr); err != nil {
		return SnapshotSummary{}, 0, err
	}
	sum := SnapshotSummary{Version: hdr.Version, Applied: hdr.Applied, Services: hdr.Services, Requests: len(hdr.Requests)}
	if hdr.ACL != nil {
		sum.ACLTokens = len(hdr.ACL.Tokens)
	}
	applied, moved := hdr.Applied+opts.Bump, opts.Bump > 0
	if opts.Current >= applied {
		applied, moved = opts.Current+1, true
	}
	var bw *bufio.Writer
	var enc *codec.Encoder
	if w != nil {
		bw = bufio.NewWriterSize(w, 256<<10)
		enc = codec.NewEncoder(bw, codecHandle)
		out := hdr
		if moved {
			out.Applied = applied
			out.ForgottenThrough = max(out.ForgottenThrough, applied)
			if out.ACL != nil {
				// The restore changed the tokens: their last change is
				// the restored state's index.
				a := *out.ACL
				a.Index = applied
				out.ACL = &a
			}
		}
		if err := enc.Encode(&out); err != nil {
			return sum, applied, fmt.Errorf("%w: %v", ErrWrite, err)
		}
	}
	seen := make(map[string]bool, min(hdr.Services, 1<<16))
	for i := range hdr.Services {
		var ss snapshotService
		if err := dec.Decode(&ss); err != nil {
			return sum, applied, fmt.Errorf("decode service %d of %d: %v: %w", i+1, hdr.Services, err, ErrBadSnapshot)
		}
		if err := checkService(&ss, hdr.Applied); err != nil {
			return sum, applied, fmt.Errorf("service %d of %d (%q): %w", i+1, hdr.Services, ss.Name, err)
		}
		if seen[ss.Name] {
			return sum, applied, fmt.Errorf("service %q appears twice: %w", ss.Name, ErrBadSnapshot)
		}
		seen[ss.Name] = true
		sum.Instances += len(ss.Instances)
		if ss.Meta != nil {
			sum.Meta++
		}
		if enc == nil {
			continue
		}
		if moved {
			ss.TruncatedThrough = max(ss.TruncatedThrough, applied)
		}
		if err := enc.Encode(&ss); err != nil {
			return sum, applied, fmt.Errorf("%w: %v", ErrWrite, err)
		}
	}
	// Nothing may follow the last service: a snapshot that says it holds
	// fewer services than it does is not one Persist wrote.
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return sum, applied, fmt.Errorf("it holds more than the %d services its header counts: %w", hdr.Services, ErrBadSnapshot)
	}
	if bw != nil {
		if err := bw.Flush(); err != nil {
			return sum, applied, fmt.Errorf("%w: %v", ErrWrite, err)
		}
	}
	return sum, applied, nil
}

// checkHeader checks what readSnapshot relies on in a snapshot's header.
func checkHeader(h *snapshotHeader) error {
	if !knownSnapshotVersion(h.Version) {
		return fmt.Errorf("snapshot format version %d, this discoverd reads %d to %d: %w", h.Version, snapshotVersion, snapshotVersionACL, ErrBadSnapshot)
	}
	if h.ACL != nil && h.Version < snapshotVersionACL {
		return fmt.Errorf("format version %d holds ACL state, which only version %d does: %w", h.Version, snapshotVersionACL, ErrBadSnapshot)
	}
	if err := checkACLState(h.ACL, h.Applied); err != nil {
		return err
	}
	if h.Services < 0 {
		return fmt.Errorf("it counts %d services: %w", h.Services, ErrBadSnapshot)
	}
	if h.ForgottenThrough > h.Applied {
		return fmt.Errorf("it forgot services through index %d, beyond its index %d: %w", h.ForgottenThrough, h.Applied, ErrBadSnapshot)
	}
	for _, r := range h.Requests {
		if err := validate.RequestID(r.ID); err != nil || r.ID == "" {
			return fmt.Errorf("a remembered request id %q is not one a client may send: %w", r.ID, ErrBadSnapshot)
		}
		if r.Index > h.Applied || r.ConflictIndex > h.Applied {
			return fmt.Errorf("request id %q answered index %d, beyond the snapshot's index %d: %w", r.ID, max(r.Index, r.ConflictIndex), h.Applied, ErrBadSnapshot)
		}
	}
	return nil
}

// checkService checks one service of a snapshot at index applied: the
// values every state holds (instances of the service, valid addresses,
// attributes and TTLs, indices no later than the snapshot's), so that the
// restored state answers as any other would.
func checkService(ss *snapshotService, applied uint64) error {
	if err := validate.Name(ss.Name); err != nil {
		return fmt.Errorf("%v: %w", err, ErrBadSnapshot)
	}
	if max(ss.LastIndex, ss.EmptySince, ss.TruncatedThrough) > applied {
		return fmt.Errorf("its bookkeeping names index %d, beyond the snapshot's index %d: %w", max(ss.LastIndex, ss.EmptySince, ss.TruncatedThrough), applied, ErrBadSnapshot)
	}
	addrs := make(map[string]bool, len(ss.Instances))
	for _, in := range ss.Instances {
		if err := checkInstance(ss.Name, in, applied); err != nil {
			return err
		}
		if addrs[in.Addr] {
			return fmt.Errorf("instance %s appears twice: %w", in.Addr, ErrBadSnapshot)
		}
		addrs[in.Addr] = true
	}
	if m := ss.Meta; m != nil && (m.Index == 0 || m.Index > applied || len(m.Data) > validate.MaxMetaBytes) {
		return fmt.Errorf("its metadata (index %d, %d bytes) is not within the snapshot's index %d and 64 KiB: %w", m.Index, len(m.Data), applied, ErrBadSnapshot)
	}
	var last uint64
	for i, e := range ss.History {
		if e.Index <= last && i > 0 || e.Index > applied {
			return fmt.Errorf("history event %d has index %d: events must have increasing indices up to the snapshot's %d: %w", i+1, e.Index, applied, ErrBadSnapshot)
		}
		last = e.Index
		switch e.Kind {
		case EventUp, EventUpdate, EventDown:
			if err := checkInstance(ss.Name, e.Instance, applied); err != nil {
				return fmt.Errorf("history event %d: %w", i+1, err)
			}
		case EventMeta:
		default:
			return fmt.Errorf("history event %d is of kind %v, which a history never holds: %w", i+1, e.Kind, ErrBadSnapshot)
		}
	}
	return nil
}

func checkInstance(service string, in *Instance, applied uint64) error {
	switch {
	case in == nil:
		return fmt.Errorf("an instance is missing (nil): %w", ErrBadSnapshot)
	case in.Name != service:
		return fmt.Errorf("instance %s %s is filed under service %s: %w", in.Name, in.Addr, service, ErrBadSnapshot)
	case in.CreateIndex == 0 || in.CreateIndex > in.ModifyIndex || in.ModifyIndex > applied:
		return fmt.Errorf("instance %s %s has indices %d (create) and %d (last registration), not 0 < create <= last <= the snapshot's %d: %w",
			in.Name, in.Addr, in.CreateIndex, in.ModifyIndex, applied, ErrBadSnapshot)
	case in.TTL == 0:
		return fmt.Errorf("instance %s %s has no TTL: %w", in.Name, in.Addr, ErrBadSnapshot)
	}
	for _, err := range []error{validate.Addr(in.Addr), validate.Attrs(in.Attrs), validate.TTL(in.TTL)} {
		if err != nil {
			return fmt.Errorf("instance %s %s: %v: %w", in.Name, in.Addr, err, ErrBadSnapshot)
		}
	}
	return nil
}
