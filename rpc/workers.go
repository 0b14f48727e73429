package rpc

import (
	"context"
	"sync/atomic"
	"time"
)

// workers runs request handlers on goroutines that live on between requests.
// Decoding a request (msgpack's recursion) grows a fresh goroutine's stack
// several times; with one new goroutine per request, copying stacks took ~7%
// of a node's CPU under write load. Idle workers wait for the next request
// and exit after workerIdle, or when ctx ends; past maxWorkers a request
// gets a goroutine of its own, so nothing ever queues here.
type workers struct {
	ctx  context.Context
	jobs chan func() // unbuffered: a send succeeds only into an idle worker
	n    atomic.Int32
	max  int32
}

const (
	maxWorkers = 256
	workerIdle = 30 * time.Second
)

func newWorkers(ctx context.Context) *workers {
	return &workers{ctx: ctx, jobs: make(chan func()), max: maxWorkers}
}

// run runs job on an idle worker, a new worker, or (past the cap) a
// goroutine of its own.
func (w *workers) run(job func()) {
	select {
	case w.jobs <- job:
		return
	default:
	}
	if w.n.Add(1) <= w.max {
		go w.work(job)
		return
	}
	w.n.Add(-1)
	go job()
}

func (w *workers) work(job func()) {
	defer w.n.Add(-1)
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		job()
		idle.Reset(workerIdle)
		select {
		case job = <-w.jobs:
		case <-idle.C:
			return
		case <-w.ctx.Done():
			return
		}
	}
}
