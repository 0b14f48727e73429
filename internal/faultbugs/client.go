package faultbugs

// InClient reports whether the named bug is planted in the client library
// (package client) rather than in discoverd. Client code runs in its
// caller's process — for the fault suite, the runner's electors — so a run
// planting such a bug must itself be built with the faultbugs tag, and
// plants it in itself with Plant; $DISCOVERD_BUG on the nodes does nothing
// for it.
func InClient(name string) bool { return name == "elect-not-oldest" }
