package etcdstore_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/discoverd/discoverd/backend/conformance"
	"github.com/discoverd/discoverd/backend/etcdstore"
	"github.com/discoverd/discoverd/internal/etcdtest"
	"github.com/discoverd/discoverd/internal/logging"
	"github.com/discoverd/discoverd/server"
)

// startFrontEnds starts n discoverd front ends over one real etcd.
func startFrontEnds(t *testing.T, n int) (*etcdtest.Etcd, []*server.Server) {
	t.Helper()
	e := etcdtest.Start(t)
	var srvs []*server.Server
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		log, _ := logging.New(t.Output(), "text", slog.LevelWarn)
		srv, err := server.Start(server.Config{Backend: server.BackendEtcd, Listener: ln, Logger: log.With("node", i),
			Etcd: etcdstore.Config{Endpoints: []string{e.Endpoint}, Prefix: "/discoverd-test", NodeID: ln.Addr().String()}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Kill() })
		srvs = append(srvs, srv)
	}
	return e, srvs
}

// TestEtcdStore_Conformance runs the DiscoveryBackend conformance suite
// against the etcd store: a real etcd (embedded, on loopback) and two
// discoverd front ends over it.
func TestEtcdStore_Conformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) *conformance.Target {
		_, srvs := startFrontEnds(t, 2)
		var servers []string
		for _, s := range srvs {
			servers = append(servers, s.Addr())
		}
		return &conformance.Target{
			Servers: servers,
			// Compact etcd's history at the current revision.
			LoseHistory: func(t *testing.T, service string) {
				cli := srvs[0].Etcd().Client()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				// Compacting at revision R keeps R itself: write once more so
				// every change of the service so far is before R.
				pr, err := cli.Put(ctx, "/discoverd-test/compact-marker", "x")
				if err != nil {
					t.Fatal(err)
				}
				if _, err := cli.Compact(ctx, pr.Header.Revision); err != nil {
					t.Fatal(err)
				}
			},
			TTL:          time.Second,
			RemovalBound: 3 * time.Second,
		}
	})
}
