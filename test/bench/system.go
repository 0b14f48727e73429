package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// system is one of the systems compared: it starts clusters of itself.
type system interface {
	name() string
	// start starts a fresh 3-node cluster (data dirs under dataDir, logs
	// under logDir, file names prefixed with tag) and returns once it has a
	// leader and answers.
	start(ctx context.Context, b *bench, tag string) (cluster, error)
}

// cluster is a running 3-node cluster of one system.
type cluster interface {
	procs() []*proc
	// leader returns the index (into procs) of the current leader.
	leader(ctx context.Context) (int, error)
	// newClient returns a client with its own connection(s). sticky: its
	// calls go to one node (home) like the Go client's single connection,
	// else each registration goes to a random node.
	newClient(ctx context.Context, home int, sticky bool) (client, error)
	// heapInuse runs a garbage collection on node i (through its
	// profiler endpoint) and returns its Go heap in use after it, in bytes.
	heapInuse(ctx context.Context, i int) (uint64, error)
	// restart starts node i again (same flags, same data dir) after it was
	// killed, and returns once the cluster has a leader and answers.
	restart(ctx context.Context, i int) error
	// count returns how many instances the services hold (a linearizable read).
	count(ctx context.Context, services []string) (int, error)
	// stop stops the processes (SIGTERM, then SIGKILL) and closes clients.
	stop()
}

// client is one benchmark client of a cluster.
type client interface {
	// warm opens the client's connections (and, for etcd, grants its shared
	// lease) so that the first timed operation does not pay for them.
	warm(ctx context.Context) error
	// register registers in. persist > 0: retry on any error, each time on
	// another node, until it succeeds or persist has passed; else one
	// attempt plus one quick retry on another node after a retryable error.
	register(ctx context.Context, in *instance, persist time.Duration) error
	// heartbeat keeps ins alive: discoverd sends them in one request, etcd
	// takes exactly one (KeepAliveOnce of its lease). notFound[i] is set
	// for an instance the server no longer knows (expired); err is a
	// failure of the request as a whole.
	heartbeat(ctx context.Context, ins []*instance) (notFound []bool, err error)
	// watch opens a watch of service's changes that starts after the
	// current state, and returns once the server has confirmed it.
	watch(ctx context.Context, service string) (watcher, error)
	close()
}

// watcher delivers the instances that came up after the watch started.
type watcher interface {
	// next returns the address of the next instance that came up.
	next(ctx context.Context) (string, error)
	close()
}

// instance is one registration made by the benchmark.
type instance struct {
	service, addr string
	ttl           time.Duration
	// ownLease (etcd): a lease of its own for this instance, as discoverd's
	// etcd backend does; else the client's shared lease.
	ownLease bool
	lease    int64 // etcd: the lease, once registered
	lost     bool  // expired while heartbeated (heartbeater)
}

// attrs are the two small attributes of every instance.
var attrs = map[string]string{"zone": "az-1", "version": "1.4.2"}

// addrOf returns a distinct, valid address for instance number n.
func addrOf(n int) string {
	return fmt.Sprintf("10.%d.%d.%d:%d", byte(n>>16), byte(n>>8), byte(n), 1000+n>>24)
}

// jitter returns d ± 10 %, as the Go client spaces heartbeats.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// retryDelay is the Go client's pause after a failed heartbeat: 200–400 ms.
func retryDelay() time.Duration { return 200*time.Millisecond + rand.N(200*time.Millisecond) }

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
