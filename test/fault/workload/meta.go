package workload

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/wire"
	"github.com/discoverd/discoverd/test/fault/history"
)

// MetaServiceNames names the services whose metadata the meta clients
// work on: the first MetaServices linearizability services, so watchers of
// those see meta events among instance changes.
func (w *Workload) MetaServiceNames() []string {
	lin := w.LinServices()
	return lin[:min(w.cfg.MetaServices, len(lin))]
}

// metaClient reads and changes one service's metadata, one attempt per op:
// consistent gets, compare-and-set writes expecting the index it last
// learned (from a get, its own write, or a conflict), sometimes a create
// (expecting none), and deletes, conditional or not. Its writes race the
// other meta clients' of the service, so most rounds end in conflicts.
func (w *Workload) metaClient(ctx context.Context, svc, base string, rng *rand.Rand, pinned int) {
	cs := w.newConns()
	defer cs.pool.Close()
	gen, n := 0, 0
	client := fmt.Sprintf("%s#%d", base, gen)
	var known uint64 // the metadata's index as this client last learned it (0: none)
	for w.think(ctx, rng) {
		node := pinned
		if node < 0 {
			node = rng.IntN(len(w.nodes))
		}
		op := history.Op{Client: client, Service: svc, Node: w.nodes[node].ID}
		var err error
		switch r := rng.Float64(); {
		case r < 0.35:
			op.Kind = history.MetaGet
			var resp wire.GetMetaResponse
			op.Call = now()
			err = w.call(ctx, cs, node, wire.MethodGetMeta, &wire.GetMetaRequest{Name: svc, Consistent: true}, &resp)
			op.Return, op.Index = now(), resp.Index
			if err == nil {
				op.MetaIndex, op.Data = resp.MetaIndex, string(resp.Data)
				known = resp.MetaIndex
			}
		case r < 0.85:
			n++
			op.Kind, op.Data, op.Expect = history.MetaSet, fmt.Sprintf("%s/%d", client, n), known
			if rng.Float64() < 0.15 {
				op.Expect = 0 // create: only if there is none
			}
			op.RequestID = requestID(client, rng)
			var resp wire.WriteResponse
			op.Call = now()
			err = w.call(ctx, cs, node, wire.MethodSetMeta, &wire.SetMetaRequest{Name: svc, Data: []byte(op.Data),
				ExpectIndex: op.Expect, RequestID: op.RequestID}, &resp)
			op.Return, op.Index = now(), resp.Index
			if err == nil {
				known = resp.Index
			}
		default:
			op.Kind, op.Expect = history.MetaDelete, known
			if rng.Float64() < 0.3 {
				op.Expect = 0 // whatever its index
			}
			op.RequestID = requestID(client, rng)
			var resp wire.WriteResponse
			op.Call = now()
			err = w.call(ctx, cs, node, wire.MethodDeleteMeta, &wire.DeleteMetaRequest{Name: svc, ExpectIndex: op.Expect,
				RequestID: op.RequestID}, &resp)
			op.Return, op.Index = now(), resp.Index
			if err == nil {
				known = 0
			}
		}
		op.Outcome, op.Code, op.Err = outcome(err)
		if cur, ok := codes.ConflictIndex(err); ok {
			op.MetaIndex, op.Index, known = cur, 0, cur
		}
		if op.Outcome != history.OK && op.Kind != history.MetaGet {
			op.Index = 0
		}
		w.record(op)
		if op.Outcome == history.Unknown {
			gen++
			client = fmt.Sprintf("%s#%d", base, gen) // this client retires
			known = 0
		}
	}
}
