package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Server CPU profiles (-server-profiles): while a measured run of the
// registration or heartbeat workload goes on, every discoverd node of the
// cluster is profiled through its /debug/pprof/profile endpoint for the
// run's length. The files are named <system>-<row>-<node>.pprof and open
// with `go tool pprof`.

// profileServers starts the profiles of cl's nodes for d and returns a
// function that waits for them and writes them under b.profileDir. It does
// nothing (and the returned function neither) without -server-profiles or
// for a system that is not discoverd. A profile that fails is logged; the
// run goes on.
func (b *bench) profileServers(ctx context.Context, sys, label string, cl cluster, d time.Duration) (wait func()) {
	dc, ok := cl.(*discoverdCluster)
	if b.profileDir == "" || !ok {
		return func() {}
	}
	secs := int(math.Ceil(d.Seconds()))
	var wg sync.WaitGroup
	for i, base := range dc.debug {
		wg.Add(1)
		go func() {
			defer wg.Done()
			file := filepath.Join(b.profileDir, fmt.Sprintf("%s-%s-%s.pprof", sys, label, dc.ids[i]))
			if err := dc.cpuProfile(ctx, i, base, secs, file); err != nil {
				b.logf("[%s] %s: CPU profile of %s: %v", sys, label, dc.ids[i], err)
			}
		}()
	}
	return wg.Wait
}

// cpuProfile fetches a CPU profile of secs seconds from node i into file.
func (c *discoverdCluster) cpuProfile(ctx context.Context, i int, base string, secs int, file string) error {
	cctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, secs), nil)
	if err != nil {
		return err
	}
	if c.acl {
		req.Header.Set("Authorization", "Bearer "+c.mgmt.Load().(string))
	}
	hc := http.DefaultClient
	if c.tls != nil {
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: c.tls(strings.TrimPrefix(base, "https://"))}}
		defer hc.CloseIdleConnections()
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s answered %s: %s", base, resp.Status, strings.TrimSpace(string(msg)))
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
