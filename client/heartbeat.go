package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/discoverd/discoverd/internal/validate"
	"github.com/discoverd/discoverd/internal/wire"
)

// Heartbeats for all of a client's registrations are sent by one loop, in
// batches: a registration is due every ~TTL/3 (±10 % jitter), and when one
// is due, every other registration due within the next TTL/12 goes in the
// same request (up to 1024 instances a request). A client keeping 1000
// instances alive therefore sends a handful of requests per interval, not
// 1000. Per instance: success schedules the next beat; "not found" (it
// expired while this client was cut off) registers it again; any other
// failure retries in 200–400 ms (the call itself fails over across servers).

// startHeartbeats starts the loop once. c.mu must be held.
func (c *Client) startHeartbeats() {
	if c.hbStarted {
		c.nudgeHeartbeats()
		return
	}
	c.hbStarted = true
	c.hbWake = make(chan struct{}, 1)
	c.loopsWG.Add(1)
	go func() {
		defer c.loopsWG.Done()
		c.heartbeatLoop(c.ctx)
	}()
}

func (c *Client) nudgeHeartbeats() {
	select {
	case c.hbWake <- struct{}{}:
	default:
	}
}

func (c *Client) heartbeatLoop(ctx context.Context) {
	for {
		batch, wait := c.dueBatch(time.Now())
		if len(batch) > 0 {
			c.beat(ctx, batch)
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-c.hbWake:
		case <-t.C:
		}
		t.Stop()
	}
}

// dueBatch takes the registrations due now (and those due soon enough to
// ride along), marks them busy, and returns them; or, if none is due, how
// long until one is.
func (c *Client) dueBatch(now time.Time) ([]*registration, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var batch []*registration
	wait := time.Hour
	for _, r := range c.regs {
		if r.busy {
			continue
		}
		if d := r.next.Sub(now); d > r.ttl/12 {
			wait = min(wait, d)
			continue
		}
		batch = append(batch, r)
	}
	if len(batch) == 0 {
		return nil, wait
	}
	// Most overdue first, at most one request's worth.
	slices.SortFunc(batch, func(a, b *registration) int { return a.next.Compare(b.next) })
	if len(batch) > validate.MaxHeartbeats {
		batch = batch[:validate.MaxHeartbeats]
	}
	for _, r := range batch {
		r.busy = true
	}
	return batch, 0
}

// beat sends one batch and schedules each registration by its result.
func (c *Client) beat(ctx context.Context, batch []*registration) {
	req := &wire.HeartbeatRequest{Instances: make([]wire.InstanceKey, len(batch))}
	shortest := batch[0].ttl
	for i, r := range batch {
		req.Instances[i] = wire.InstanceKey{Name: r.key.name, Addr: r.key.addr}
		shortest = min(shortest, r.ttl)
	}
	hctx, cancel := context.WithTimeout(ctx, shortest/3)
	var resp wire.HeartbeatResponse
	err := c.call(hctx, wire.MethodHeartbeat, req, &resp)
	cancel()
	if err == nil && len(resp.Results) != len(batch) {
		err = fmt.Errorf("heartbeat: server answered %d results for %d instances", len(resp.Results), len(batch))
	}
	now := time.Now()
	var reports []heartbeatReport
	defer func() { c.reportHeartbeats(reports) }() // after the unlock below
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range batch {
		r.busy = false
		if c.regs[r.key] != r {
			continue // unregistered meanwhile
		}
		rerr := err
		if err == nil {
			rerr = resp.Results[i].Err()
		}
		if ctx.Err() == nil {
			reports = c.noteHeartbeat(reports, r, rerr)
		}
		switch {
		case rerr == nil:
			r.next = now.Add(jitter(r.ttl / 3))
		case ctx.Err() != nil:
		case errors.Is(rerr, ErrNotFound):
			c.log.Warn("discoverd: instance no longer registered, registering again", "service", r.key.name, "addr", r.key.addr)
			c.registerAgainLocked(ctx, r)
		case errors.Is(rerr, ErrPermissionDenied):
			// Not retried at once — every server would say the same — but
			// at the usual interval, in case the token's rights come back.
			c.log.Warn("discoverd: heartbeat denied, trying again at the next interval", "service", r.key.name, "addr", r.key.addr, "err", rerr)
			r.next = now.Add(jitter(r.ttl / 3))
		default:
			c.log.Warn("discoverd: heartbeat failed, retrying", "service", r.key.name, "addr", r.key.addr, "err", rerr)
			r.next = now.Add(retryDelay())
		}
	}
}

// registerAgainLocked registers r again in the background. c.mu must be held.
func (c *Client) registerAgainLocked(ctx context.Context, r *registration) {
	r.busy = true
	done := make(chan struct{})
	r.rereg = done
	key, attrs, ttl := r.key, r.attrs, r.ttl
	c.loopsWG.Add(1)
	go func() {
		defer c.loopsWG.Done()
		defer close(done)
		rctx, cancel := context.WithTimeout(ctx, max(ttl/3, 2*time.Second))
		index, err := c.registerOnce(rctx, key.name, key.addr, attrs, ttl)
		cancel()
		c.mu.Lock()
		defer c.mu.Unlock()
		r.busy, r.rereg = false, nil
		switch {
		case err == nil:
			r.index = max(r.index, index)
			r.next = time.Now().Add(jitter(ttl / 3))
		case errors.Is(err, ErrPermissionDenied):
			c.log.Warn("discoverd: registering again denied, trying again at the next interval", "service", key.name, "addr", key.addr, "err", err)
			r.next = time.Now().Add(jitter(ttl / 3))
		default:
			r.next = time.Now().Add(retryDelay())
		}
		c.nudgeHeartbeats()
	}()
}
