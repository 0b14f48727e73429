package prockit

// RaftFlags returns the Raft timings every test cluster of discoverd server
// processes uses (the package test smoke tests and the fault suite; the
// benchmark runs discoverd's defaults). 500 ms is the tightest timing that
// does not starve a 2-core machine: with tighter ones a loaded machine
// misses heartbeats and the cluster holds needless elections. A new slice
// each call, for the caller to append to.
func RaftFlags() []string {
	return []string{
		"-raft-heartbeat-timeout", "500ms",
		"-raft-election-timeout", "500ms",
		"-raft-leader-lease-timeout", "250ms",
	}
}

// ServerArgs returns the arguments that start node id of a cluster:
// `server -id id -addr addr -data-dir dataDir -peers peers`, for the caller
// to append its own flags to. peers is the -peers list ("n1=host:port,...").
func ServerArgs(id, addr, dataDir, peers string) []string {
	return []string{"server", "-id", id, "-addr", addr, "-data-dir", dataDir, "-peers", peers}
}
