// Package wire is discoverd's native protocol: the message types
// (messages.go), the framing and the MessagePack codec (frame.go, and the
// hand-written encoders of the hot messages in fast.go), and a writer that
// lets many goroutines share one connection (framewriter.go). The RPC server
// (rpc/), the Go client (client/) and forwarding between nodes
// (internal/rpcconn) all speak it. docs/protocol.md describes the same thing
// for implementers in other languages, and the two must stay in step.
//
// A connection starts with one byte, mux.ConnRPC, then carries frames both
// ways. A frame is a 4-byte big-endian length followed by that many bytes,
// which hold two MessagePack values back to back: a Header and a body.
package wire
