//go:build !faultbugs

// Package faultbugs plants known bugs in discoverd, for the fault suite to
// prove that its checkers catch them. Only a binary built with the
// faultbugs tag has them, and then only the one named by $DISCOVERD_BUG
// (or by Plant):
//
//	stale-read             consistent reads are served from local state, unconfirmed
//	ack-before-commit      writes are acknowledged before they are committed
//	expire-early           the leader expires instances after a third of their TTL
//	drop-watch-event       watch streams skip some change events
//	read-before-caught-up  a node serves reads before it has caught up with the
//	                       cluster since it started (e.g. from its last snapshot)
//	elect-not-oldest       client.Elect takes its own instance for the leader once
//	                       it is online, without checking that it is the oldest:
//	                       every candidate leads at once (client side, see InClient)
//
// In normal builds On is a constant false and the planted code compiles away.
package faultbugs

// Built reports whether this binary was built with the faultbugs tag.
const Built = false

// On reports whether the named bug is planted.
func On(string) bool { return false }

// Plant plants the named bug in this process; the function it returns
// restores the one planted before. Without the faultbugs tag it does
// nothing.
func Plant(string) (restore func()) { return func() {} }
