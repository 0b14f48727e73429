package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/discoverd/discoverd/ttl"
)

// stormFlags are the expiry-storm guard's flags of `discoverd server` (and
// dev): ttl/DESIGN.md, "The expiry-storm guard".
type stormFlags struct {
	threshold, cluster percentFlag
	minInstances       int
	maxHold            ttlMultipleFlag
}

func (f *stormFlags) register(fs *flag.FlagSet) {
	d := ttl.DefaultStormConfig()
	f.threshold, f.cluster, f.maxHold = percentFlag(d.Threshold), percentFlag(d.ClusterThreshold), ttlMultipleFlag(d.MaxHold)
	fs.Var(&f.threshold, "storm-threshold", "expiry-storm guard: hold back expiries beyond this share of a service's instances failing within one TTL (e.g. 50%); 0 turns the guard off")
	fs.Var(&f.cluster, "storm-cluster-threshold", "expiry-storm guard: the same for the share of all instances together; 0 (default) off")
	fs.IntVar(&f.minInstances, "storm-min-instances", d.MinInstances, "expiry-storm guard: never hold an expiry of a service (or, for -storm-cluster-threshold, a cluster) with fewer instances")
	fs.Var(&f.maxHold, "storm-max-hold", "expiry-storm guard: the longest an expiry is held past its deadline, in TTLs of the instance (e.g. 3x)")
}

// config returns the guard's configuration.
func (f *stormFlags) config() (ttl.StormConfig, error) {
	if f.minInstances < 1 {
		return ttl.StormConfig{}, usageErr("-storm-min-instances %d: want 1 or more", f.minInstances)
	}
	return ttl.StormConfig{Threshold: float64(f.threshold), ClusterThreshold: float64(f.cluster),
		MinInstances: f.minInstances, MaxHold: float64(f.maxHold)}, nil
}

// percentFlag is a share written as a percentage: "50%" or "50" is 0.5;
// 0 turns the guard off; 100 and over would never hold anything.
type percentFlag float64

func (p *percentFlag) String() string {
	return strconv.FormatFloat(float64(*p)*100, 'f', -1, 64) + "%"
}

func (p *percentFlag) Set(s string) error {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || v < 0 || v >= 100 || v != v {
		return fmt.Errorf("%q: want a percentage from 0 (off) to below 100, e.g. 50%%", s)
	}
	*p = percentFlag(v / 100)
	return nil
}

// ttlMultipleFlag is a multiple of an instance's TTL: "3x" or "3".
type ttlMultipleFlag float64

func (m *ttlMultipleFlag) String() string {
	return strconv.FormatFloat(float64(*m), 'f', -1, 64) + "x"
}

func (m *ttlMultipleFlag) Set(s string) error {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "x"), 64)
	if err != nil || v <= 0 || v > 100 || v != v {
		return fmt.Errorf("%q: want a multiple of the TTL above 0 and at most 100, e.g. 3x", s)
	}
	*m = ttlMultipleFlag(v)
	return nil
}
