package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// The disk's synced-write latency, measured at the start and at the end of
// every run and printed above the results: every write of both systems
// waits for fsyncs (discoverd: a bbolt commit per log append, two fsyncs;
// etcd: a WAL fdatasync), so the same code on the same machine writes at
// another rate when the disk is slower — as it was one week at 0.65 ms
// against 0.3 ms the week before.

const (
	diskProbeWrites = 200
	diskProbeBytes  = 4096
)

// diskLatency is what a probe measured, in milliseconds.
type diskLatency struct {
	writes, bytes       int
	p50, p99, max, mean float64
}

// probeDisk appends writes blocks of size bytes to a new file in dir,
// opened with O_DSYNC (each write returns once the data and the file's size
// are on the device, as write + fdatasync; what `dd oflag=dsync` and etcd's
// fio recipe time), times each write, and removes the file.
func probeDisk(dir string, writes, size int) (diskLatency, error) {
	f, err := os.CreateTemp(dir, "disk-probe-*")
	if err != nil {
		return diskLatency{}, err
	}
	name := f.Name()
	_ = f.Close()
	defer os.Remove(name)
	f, err = os.OpenFile(name, os.O_WRONLY|os.O_TRUNC|syscall.O_DSYNC, 0o600)
	if err != nil {
		return diskLatency{}, err
	}
	defer f.Close()
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i*7 + 1) // not zeros: nothing below may skip them
	}
	lat := &latencies{}
	r := lat.worker()
	var total time.Duration
	for range writes {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			return diskLatency{}, fmt.Errorf("disk probe: write %s: %w", name, err)
		}
		d := time.Since(t0)
		r.ok(d)
		total += d
	}
	r.flush()
	s := lat.summary()
	return diskLatency{writes: writes, bytes: size, p50: s.p50, p99: s.p99, max: s.max,
		mean: float64(total.Microseconds()) / float64(writes) / 1000}, nil
}

func (d diskLatency) String() string {
	return fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, max %.2f ms, mean %.2f ms", d.p50, d.p99, d.max, d.mean)
}

// diskRow is the probe as a row of results.json (workload "disk", system
// "host").
func diskRow(d diskLatency, when string) row {
	return row{Workload: "disk", System: "host", OpsPerS: round2(1000 / max(d.mean, 0.001)), P50: d.p50, P99: d.p99, Max: d.max,
		Extra: map[string]any{"when": when, "writes": d.writes, "bytes": d.bytes, "mean_ms": round2(d.mean),
			"method": fmt.Sprintf("%d B appended with O_DSYNC to a new file in the data dir, timed one by one", d.bytes)}}
}

// probeDiskInto measures the disk in the bench's data dir and keeps the
// result (when: "start" or "end") for the report.
func (b *bench) probeDiskInto(when string) {
	d, err := probeDisk(b.dataDir, diskProbeWrites, diskProbeBytes)
	if err != nil {
		b.logf("bench: disk probe (%s): %v", when, err)
		return
	}
	b.mu.Lock()
	b.disk = append(b.disk, diskRow(d, when))
	b.mu.Unlock()
	b.logf("bench: disk (%s of the run): %d B synced write (O_DSYNC) in %s: %v", when, d.bytes, filepath.Base(b.dataDir), d)
}

// diskLine says what the probes measured, for the top of the results.
func (b *bench) diskLine() string {
	if len(b.disk) == 0 {
		return "disk: not measured"
	}
	s := fmt.Sprintf("disk: %d B synced write (O_DSYNC, %d appends)", diskProbeBytes, diskProbeWrites)
	for i, r := range b.disk {
		if i > 0 {
			s += ";"
		}
		s += fmt.Sprintf(" at the %s p50 %.2f ms, p99 %.2f ms", r.Extra["when"], r.P50, r.P99)
	}
	return s
}
