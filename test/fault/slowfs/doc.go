// Package slowfs is the fault suite's slow or failing disk: a FUSE
// pass-through (loopback) file system over a backing directory whose fsyncs
// and writes can be delayed or made to fail with EIO while a discoverd node,
// running as a separate process, keeps its data dir (raft.db, snapshots) on
// the mount.
//
// The test harness owns the *FS: it mounts the node's data dir before
// starting the node, turns faults on and off with SetFsyncDelay,
// SetFsyncError, SetWriteDelay and SetWriteError while the node runs, reads
// Stats to see that the node really did hit the faults, and unmounts at the
// end. CleanStale removes mounts that a crashed earlier run left behind.
//
// The file system is served by goroutines of the process that called Mount.
// That process must not itself mmap files on the mount (bbolt does): a page
// fault on a FUSE-backed page cannot be preempted, so a stop-the-world GC
// can deadlock against the goroutine that would have answered it. Run
// whatever opens bbolt on the mount in another process, as the fault suite
// does with its nodes. DESIGN.md has the details.
//
// Linux only, as root: the mount is made with mount(2) directly
// (fusermount is not needed).
package slowfs
