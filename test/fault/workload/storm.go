package workload

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Storm is a service for the expiry-storm guard (ttl/DESIGN.md): Clients
// heartbeating instances, a Share of which go silent at once — first cut
// off (no heartbeat leaves them) from CutAt for Cut, after which they
// heartbeat again, then stopped for good at StopAt (Stop ops). Times are
// after the workload's start; a zero time skips that step.
type Storm struct {
	Clients int
	Share   float64
	CutAt   time.Duration
	Cut     time.Duration
	StopAt  time.Duration
}

// silence is one storm client's plan.
type silence struct {
	cutFrom, cutTo time.Time
	stopAt         time.Time
}

// cutOff waits out the cut if it is on now and reports whether it did.
func (s *silence) cutOff(ctx context.Context) bool {
	now := time.Now()
	if s.cutFrom.IsZero() || now.Before(s.cutFrom) || !now.Before(s.cutTo) {
		return false
	}
	sleep(ctx, s.cutTo.Sub(now))
	return true
}

// StormServiceNames names the storm service (none without storm clients).
func (w *Workload) StormServiceNames() []string {
	if w.cfg.Storm.Clients == 0 {
		return nil
	}
	return []string{"storm0"}
}

// startStorm launches the storm service's clients: ttlClients, the first
// Share of them with a plan that silences them together.
func (w *Workload) startStorm(ctx context.Context, seed uint64) {
	st := w.cfg.Storm
	start := time.Now()
	silent := int(math.Round(st.Share * float64(st.Clients)))
	for _, svc := range w.StormServiceNames() {
		for c := range st.Clients {
			rng := rand.New(rand.NewPCG(seed, uint64(50000+c)))
			addr := fmt.Sprintf("10.150.%d.%d:80", c/250, c%250+1)
			plan := &silence{}
			if c < silent {
				if st.CutAt > 0 && st.Cut > 0 {
					plan.cutFrom, plan.cutTo = start.Add(st.CutAt), start.Add(st.CutAt+st.Cut)
				}
				if st.StopAt > 0 {
					plan.stopAt = start.Add(st.StopAt)
				}
			}
			w.clients.Add(1)
			go func() {
				defer w.clients.Done()
				w.ttlClient(ctx, svc, addr, fmt.Sprintf("%s-h%d", svc, c), rng, plan)
			}()
		}
	}
}
