// Package codes defines discoverd's error sentinels once, each with a stable
// wire code. Every layer (fsm, ttl, raftnode, backend, rpc, client) returns or
// wraps these values, and the RPC layer carries the code across the network so
// the client rebuilds the very same sentinel: errors.Is works end to end.
//
// A code also tells a caller what happened to a write. Codes whose Outcome is
// NotApplied mean the write was rejected before it was proposed to Raft and
// definitely did not happen; Unknown means it may or may not have been
// committed (retry with the same request id to find out safely).
package codes

import (
	"context"
	"errors"
	"fmt"
)

// Code is the stable, wire-visible name of an error kind.
type Code string

// The codes. Never rename one: clients in other languages match on them.
const (
	CodeOK                Code = ""
	CodeInvalidArgument   Code = "invalid_argument"
	CodeNotFound          Code = "not_found"
	CodeNoLeader          Code = "no_leader"
	CodeNotLeader         Code = "not_leader"
	CodeUnknownOutcome    Code = "unknown_outcome"
	CodeStaleNode         Code = "stale_node"
	CodeNotReady          Code = "not_ready"
	CodeTooLarge          Code = "too_large"
	CodeTimeout           Code = "timeout"
	CodeShuttingDown      Code = "shutting_down"
	CodeUnknownMethod     Code = "unknown_method"
	CodeUnavailable       Code = "unavailable"
	CodeResourceExhausted Code = "resource_exhausted"
	CodeOverloaded        Code = "overloaded"
	CodeConflict          Code = "conflict"
	CodeRefused           Code = "refused"
	CodePermissionDenied  Code = "permission_denied"
	CodeInternal          Code = "internal"
)

// Sentinels. Wrap them with fmt.Errorf("...: %w", ErrX) to add detail.
var (
	// ErrInvalidArgument: the request was malformed or out of limits; nothing changed.
	ErrInvalidArgument = &Error{code: CodeInvalidArgument, msg: "invalid argument"}
	// ErrNotFound: the named instance is not registered (it expired or was unregistered).
	ErrNotFound = &Error{code: CodeNotFound, msg: "instance not registered"}
	// ErrNoLeader: the cluster has no leader right now; nothing was proposed, retry later.
	ErrNoLeader = &Error{code: CodeNoLeader, msg: "no cluster leader"}
	// ErrNotLeader: the node that received a forwarded write is not the leader; nothing was proposed.
	ErrNotLeader = &Error{code: CodeNotLeader, msg: "node is not the leader"}
	// ErrUnknownOutcome: the write was proposed but its fate is unknown (timeout or
	// leadership lost after proposing). Retrying with the same request id is safe.
	ErrUnknownOutcome = &Error{code: CodeUnknownOutcome, msg: "write outcome unknown"}
	// ErrStaleNode: the node has not applied an index the client has already seen; ask another node.
	ErrStaleNode = &Error{code: CodeStaleNode, msg: "node is behind the requested index"}
	// ErrNotReady: the node has not caught up with the cluster since it
	// started (it has not yet applied what a leader committed), so its state
	// could be older than one it served before; ask another node.
	ErrNotReady = &Error{code: CodeNotReady, msg: "node has not caught up with the cluster since it started"}
	// ErrTooLarge: a frame or value exceeded a size limit; nothing changed.
	ErrTooLarge = &Error{code: CodeTooLarge, msg: "request too large"}
	// ErrTimeout: the operation did not finish in time; for writes, see ErrUnknownOutcome.
	ErrTimeout = &Error{code: CodeTimeout, msg: "timed out"}
	// ErrShuttingDown: the node is stopping; nothing was proposed, use another node.
	ErrShuttingDown = &Error{code: CodeShuttingDown, msg: "node is shutting down"}
	// ErrUnknownMethod: the RPC method does not exist on this server.
	ErrUnknownMethod = &Error{code: CodeUnknownMethod, msg: "unknown method"}
	// ErrUnavailable: the node could not be reached; the request was not sent.
	ErrUnavailable = &Error{code: CodeUnavailable, msg: "node unavailable"}
	// ErrResourceExhausted: a per-connection limit was reached (open streams); nothing changed.
	ErrResourceExhausted = &Error{code: CodeResourceExhausted, msg: "resource exhausted"}
	// ErrOverloaded: the leader did not accept the write into its queue in
	// time; nothing was proposed. Retry later.
	ErrOverloaded = &Error{code: CodeOverloaded, msg: "leader overloaded"}
	// ErrConflict: a compare-and-set of a service's metadata expected it at
	// another index than the one it is at (or expected none and found some);
	// nothing changed. The error is a *ConflictError carrying the current
	// index (ConflictIndex): read again and retry.
	ErrConflict = &Error{code: CodeConflict, msg: "metadata index does not match"}
	// ErrRefused: the cluster's state does not allow the operation (a
	// membership change that would lose the quorum, say); nothing changed.
	ErrRefused = &Error{code: CodeRefused, msg: "refused"}
	// ErrPermissionDenied: with ACLs on, the caller's token does not allow
	// the operation (the message names the rule it lacks), or the token is
	// unknown or expired; nothing changed. Not retryable with the same token.
	ErrPermissionDenied = &Error{code: CodePermissionDenied, msg: "permission denied"}
	// ErrInternal: an unexpected server-side failure.
	ErrInternal = &Error{code: CodeInternal, msg: "internal error"}
)

// sentinels are all of the above.
var sentinels = []*Error{ErrInvalidArgument, ErrNotFound, ErrNoLeader, ErrNotLeader,
	ErrUnknownOutcome, ErrStaleNode, ErrNotReady, ErrTooLarge, ErrTimeout, ErrShuttingDown,
	ErrUnknownMethod, ErrUnavailable, ErrResourceExhausted, ErrOverloaded, ErrConflict, ErrRefused, ErrPermissionDenied, ErrInternal}

var byCode = map[Code]*Error{}

// All returns every code, CodeOK first.
func All() []Code {
	out := []Code{CodeOK}
	for _, e := range sentinels {
		out = append(out, e.code)
	}
	return out
}

func init() {
	for _, e := range sentinels {
		byCode[e.code] = e
	}
}

// Error is a sentinel with a wire code. Compare with errors.Is, never by value.
type Error struct {
	code Code
	msg  string
}

func (e *Error) Error() string { return e.msg }

// Code returns the sentinel's wire code.
func (e *Error) Code() Code { return e.code }

// Of returns the code of the first sentinel in err's chain, CodeOK for nil,
// CodeTimeout for context deadline errors and CodeInternal for anything else.
func Of(err error) Code {
	if err == nil {
		return CodeOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return CodeTimeout
	}
	return CodeInternal
}

// Sentinel returns the sentinel for a wire code; unknown codes map to ErrInternal.
func Sentinel(c Code) *Error {
	if e, ok := byCode[c]; ok {
		return e
	}
	return ErrInternal
}

// FromWire rebuilds an error received over the network: the message as the
// server wrote it, wrapping the sentinel for its code so errors.Is works.
// A conflict rebuilt by FromWire carries index 0; FromWireIndex gives it
// the index the answer carried.
func FromWire(c Code, msg string) error {
	return FromWireIndex(c, msg, 0)
}

// FromWireIndex is FromWire for an answer that also carried an index: a
// conflict becomes a *ConflictError with that current index (other codes
// ignore it).
func FromWireIndex(c Code, msg string, index uint64) error {
	if c == CodeOK {
		return nil
	}
	if c == CodeConflict {
		return &ConflictError{Index: index, msg: msg}
	}
	s := Sentinel(c)
	if msg == "" || msg == s.msg {
		return s
	}
	return &wireError{msg: msg, sentinel: s}
}

type wireError struct {
	msg      string
	sentinel *Error
}

func (e *wireError) Error() string { return e.msg }
func (e *wireError) Unwrap() error { return e.sentinel }

// ConflictError is ErrConflict with the index the metadata is at now (0:
// there is none), so a caller can read it again and retry its
// compare-and-set. errors.Is(err, ErrConflict) holds for it.
type ConflictError struct {
	Index uint64 // the metadata's current index; 0: the service has no metadata
	msg   string
}

func (e *ConflictError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("%s: the metadata is at index %d", ErrConflict.msg, e.Index)
	}
	return e.msg
}

func (e *ConflictError) Unwrap() error { return ErrConflict }

// Conflict returns a *ConflictError whose current index is current, with a
// message saying what was expected (format and args) and where the
// metadata is.
func Conflict(current uint64, format string, args ...any) error {
	where := fmt.Sprintf("the metadata is at index %d", current)
	if current == 0 {
		where = "there is no metadata"
	}
	return &ConflictError{Index: current, msg: fmt.Sprintf("%s, but %s: %s", fmt.Sprintf(format, args...), where, ErrConflict.msg)}
}

// ConflictIndex returns the current index a conflict carries, and whether
// err is a conflict at all (a bare ErrConflict carries 0).
func ConflictIndex(err error) (uint64, bool) {
	var ce *ConflictError
	if errors.As(err, &ce) {
		return ce.Index, true
	}
	return 0, errors.Is(err, ErrConflict)
}

// Errorf returns an error of s's kind whose message is exactly the one
// formatted, without s's own message after it (errors.Is(err, s) holds):
// for a sentinel whose message would read wrong there.
func Errorf(s *Error, format string, args ...any) error {
	return &wireError{msg: fmt.Sprintf(format, args...), sentinel: s}
}

// Invalid returns an ErrInvalidArgument with a precise message.
func Invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalidArgument)
}

// Retryable reports whether a request that failed with err may be retried on
// another node without risk: the write was not proposed, or it carries a
// request id that makes a retry idempotent.
func Retryable(err error) bool {
	switch Of(err) {
	case CodeNoLeader, CodeNotLeader, CodeUnknownOutcome, CodeStaleNode, CodeNotReady, CodeShuttingDown, CodeTimeout,
		CodeUnavailable, CodeOverloaded:
		return true
	}
	return false
}

// NotApplied reports whether err proves the write was never proposed.
func NotApplied(err error) bool {
	switch Of(err) {
	case CodeInvalidArgument, CodeNotFound, CodeNoLeader, CodeNotLeader, CodeStaleNode, CodeNotReady,
		CodeTooLarge, CodeShuttingDown, CodeUnknownMethod, CodeUnavailable, CodeResourceExhausted, CodeOverloaded,
		CodeConflict, CodeRefused, CodePermissionDenied:
		return true
	}
	return false
}
