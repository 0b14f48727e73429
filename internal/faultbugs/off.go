//go:build !faultbugs

// Package faultbugs plants known bugs in discoverd, for the fault suite to
// prove that its checkers catch them. Only a binary built with the
// faultbugs tag has them, and then only the one named by $DISCOVERD_BUG:
//
//	stale-read             consistent reads are served from local state, unconfirmed
//	ack-before-commit      writes are acknowledged before they are committed
//	expire-early           the leader expires instances after a third of their TTL
//	drop-watch-event       watch streams skip some change events
//	read-before-caught-up  a node serves reads before it has caught up with the
//	                       cluster since it started (e.g. from its last snapshot)
//
// In normal builds On is a constant false and the planted code compiles away.
package faultbugs

// On reports whether the named bug is planted.
func On(string) bool { return false }
