package server

import (
	"context"
	"github.com/discoverd/discoverd/httpapi"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discoverd/discoverd/fsm"
	"github.com/discoverd/discoverd/internal/connlimit"
	"github.com/discoverd/discoverd/internal/histogram"
	"github.com/discoverd/discoverd/internal/mux"
)

// The node's Prometheus metrics (/metrics; docs/metrics.md lists them).
// Every value is read at scrape time from the counters the parts already
// keep (raftnode, fsm, ttl, rpc, the muxes): a scrape adds no work to the
// write or heartbeat path. Histograms are kept by the parts with atomic
// adds (internal/histogram) and exported here.

// metric describes one metric family.
type metric struct {
	name, help string
	labels     []string
	desc       *prometheus.Desc
}

// Units of the histograms the parts keep.
const microsPerSecond = 1e6

// The families, named by Prometheus conventions: discoverd_ prefix,
// _total for counters, base units (seconds).
var (
	mRaftState       = &metric{name: "discoverd_raft_state", help: "1 for the Raft state this node is in (leader, follower, candidate, shutdown), 0 for the others.", labels: []string{"state"}}
	mRaftTerm        = &metric{name: "discoverd_raft_term", help: "This node's Raft term."}
	mRaftCommit      = &metric{name: "discoverd_raft_commit_index", help: "The last Raft log index this node knows to be committed."}
	mRaftApplied     = &metric{name: "discoverd_raft_applied_index", help: "The last Raft log index applied to this node's state machine."}
	mRaftLast        = &metric{name: "discoverd_raft_last_log_index", help: "The last index in this node's Raft log."}
	mLastContact     = &metric{name: "discoverd_raft_last_contact_seconds", help: "How long ago this node last heard from a leader: 0 on the leader, -1 if never since it started."}
	mLeaderKnown     = &metric{name: "discoverd_raft_leader_known", help: "1 while this node knows a leader (it leads, or it heard from one lately), else 0."}
	mAppendSeconds   = &metric{name: "discoverd_raft_log_append_duration_seconds", help: "Time of each Raft log append: one bbolt transaction with its fsyncs."}
	mAppendEntries   = &metric{name: "discoverd_raft_log_append_entries", help: "Log entries each Raft log append carried."}
	mGroupWrites     = &metric{name: "discoverd_raft_group_commit_writes", help: "Writes of each group that group commit handed to Raft (one log entry with -raft-apply-batch)."}
	mReady           = &metric{name: "discoverd_ready", help: "1 when the node is ready to serve (/health/ready answers 200), else 0."}
	mServices        = &metric{name: "discoverd_services", help: "Services holding instances or metadata, in this node's state."}
	mInstances       = &metric{name: "discoverd_instances", help: "Registered instances, in this node's state."}
	mRemoved         = &metric{name: "discoverd_instances_removed_total", help: "Instances removed from this node's state since it started, by reason: expired (TTL) or unregistered.", labels: []string{"reason"}}
	mHeartbeats      = &metric{name: "discoverd_heartbeats_total", help: "Instance heartbeats clients sent to this node (forwarded ones are counted by the node that received them)."}
	mRelayCalls      = &metric{name: "discoverd_heartbeat_relay_calls_total", help: "Calls this node made to the leader relaying its clients' heartbeats together (on a follower; -heartbeat-relays)."}
	mRelayed         = &metric{name: "discoverd_heartbeat_relayed_total", help: "Instance heartbeats those relay calls carried: divided by the calls, how many heartbeats went to the leader in one call."}
	mStormHeld       = &metric{name: "discoverd_storm_held_expiries", help: "Expiries the expiry-storm guard holds back now (on the leader)."}
	mStormHolds      = &metric{name: "discoverd_storm_holds_total", help: "Expiries the expiry-storm guard began to hold, while this node led."}
	mStormReleased   = &metric{name: "discoverd_storm_released_total", help: "Held expiries that went ahead at their longest hold (-storm-max-hold)."}
	mStormUnheld     = &metric{name: "discoverd_storm_unheld_total", help: "Holds that ended otherwise: a heartbeat, a registration, a removal, leadership lost."}
	mWatchStreams    = &metric{name: "discoverd_watch_streams", help: "Watch streams open on this node: native watches and Server-Sent Events streams of the HTTP API."}
	mResyncs         = &metric{name: "discoverd_watch_resyncs_total", help: "Watchers sent the whole state instead of the changes they missed, by reason: resume (the history no longer reaches back), behind (a slow consumer), restore (a snapshot replaced the state).", labels: []string{"reason"}}
	mSlowCuts        = &metric{name: "discoverd_watch_slow_consumer_cuts_total", help: "Client connections closed because the client did not take a frame (or, on an HTTP API event stream, a batch of events) within the write timeout."}
	mConns           = &metric{name: "discoverd_connections", help: "Connections open now, by kind: client, raft and peer on the node's port, handshake (not yet through TLS and the protocol byte), http on the HTTP listener.", labels: []string{"kind"}}
	mRefused         = &metric{name: "discoverd_connections_refused_total", help: "Connections closed at once for a limit, by the flag that sets it.", labels: []string{"limit"}}
	mRequests        = &metric{name: "discoverd_rpc_requests_total", help: "Protocol requests answered, by method and code (ok for a success).", labels: []string{"method", "code"}}
	mRequestDuration = &metric{name: "discoverd_rpc_request_duration_seconds", help: "Time from a request's arrival to its answer (Watch: until the stream is open), by method and code.", labels: []string{"method", "code"}}
)

// raftMetrics are exported by a Raft node only; the others by both backends.
var (
	raftMetrics = []*metric{mRaftState, mRaftTerm, mRaftCommit, mRaftApplied, mRaftLast, mLastContact, mLeaderKnown,
		mAppendSeconds, mAppendEntries, mGroupWrites, mServices, mInstances, mRemoved, mStormHeld, mStormHolds,
		mStormReleased, mStormUnheld, mResyncs, mRelayCalls, mRelayed}
	commonMetrics = []*metric{mReady, mHeartbeats, mWatchStreams, mSlowCuts, mConns, mRefused, mRequests, mRequestDuration}
)

func init() {
	for _, m := range append(append([]*metric(nil), raftMetrics...), commonMetrics...) {
		m.desc = prometheus.NewDesc(m.name, m.help, m.labels, nil)
	}
}

// collector reads a node's metrics at scrape time.
type collector struct {
	s    *Server
	http *connlimit.Listener
	api  *httpapi.API
}

func newCollector(s *Server, http *connlimit.Listener, api *httpapi.API) *collector {
	return &collector{s: s, http: http, api: api}
}

func (c *collector) families() []*metric {
	if c.s.node == nil {
		return commonMetrics
	}
	return append(append([]*metric(nil), raftMetrics...), commonMetrics...)
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.families() {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(m *metric, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(m *metric, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(v), labels...)
	}
	ready, _ := s.readiness(context.Background())
	gauge(mReady, boolValue(ready))
	rs := s.rpc.Stats()
	counter(mHeartbeats, rs.Heartbeats)
	as := c.api.Stats()
	gauge(mWatchStreams, float64(rs.WatchStreams)+float64(as.Streams))
	counter(mSlowCuts, rs.SlowConsumerCuts+as.SlowConsumerCuts)
	for _, call := range rs.Calls {
		code := string(call.Code)
		if code == "" {
			code = "ok"
		}
		counter(mRequests, call.LatencyUS.Count, call.Method, code)
		ch <- constHistogram(mRequestDuration, call.LatencyUS, microsPerSecond, call.Method, code)
	}
	ms := s.mux.Stats()
	gauge(mConns, float64(ms.RPC), "client")
	gauge(mConns, float64(ms.Raft), "raft")
	gauge(mConns, float64(ms.Peer), "peer")
	gauge(mConns, float64(ms.Handshakes), "handshake")
	gauge(mConns, float64(c.http.Open()), "http")
	counter(mRefused, ms.RefusedBy[mux.LimitConns], "max-conns")
	counter(mRefused, ms.RefusedBy[mux.LimitConnsPerIP], "max-conns-per-ip")
	counter(mRefused, ms.RefusedBy[mux.LimitHandshakes], "max-handshakes")
	counter(mRefused, c.http.Refused(), "http-max-conns")
	if s.node == nil {
		return
	}

	st := s.node.Status()
	for _, state := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
		gauge(mRaftState, boolValue(st.State == state), strings.ToLower(state))
	}
	gauge(mRaftTerm, float64(st.Term))
	gauge(mRaftCommit, float64(st.CommitIndex))
	gauge(mRaftApplied, float64(st.AppliedIndex))
	gauge(mRaftLast, float64(st.LastIndex))
	lc := s.node.LastContact()
	if lc < 0 {
		gauge(mLastContact, -1)
	} else {
		gauge(mLastContact, lc.Seconds())
	}
	gauge(mLeaderKnown, boolValue(s.store.Freshness().KnownLeader))
	hs := s.node.Histograms()
	ch <- constHistogram(mAppendSeconds, hs.AppendUS, microsPerSecond)
	ch <- constHistogram(mAppendEntries, hs.AppendEntries, 1)
	if hs.GroupWrites != nil {
		ch <- constHistogram(mGroupWrites, *hs.GroupWrites, 1)
	}

	fm := s.fsm.Metrics()
	gauge(mServices, float64(fm.Services))
	gauge(mInstances, float64(fm.Instances))
	counter(mRemoved, fm.Expired, "expired")
	counter(mRemoved, fm.Unregistered, "unregistered")
	counter(mResyncs, fm.Resyncs[fsm.ResyncResume], "resume")
	counter(mResyncs, fm.Resyncs[fsm.ResyncBehind], "behind")
	counter(mResyncs, fm.Resyncs[fsm.ResyncRestore], "restore")

	calls, relayed := s.store.RelayStats()
	counter(mRelayCalls, calls)
	counter(mRelayed, relayed)

	ts := s.tracker.Stats()
	gauge(mStormHeld, float64(ts.StormHeld))
	counter(mStormHolds, ts.StormHolds)
	counter(mStormReleased, ts.StormReleased)
	counter(mStormUnheld, ts.StormUnheld)
}

// constHistogram exports a part's histogram, its values divided by unit
// (microseconds to seconds).
func constHistogram(m *metric, h histogram.Snapshot, unit float64, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		buckets[float64(b)/unit] = h.Cumulative[i]
	}
	return prometheus.MustNewConstHistogram(m.desc, h.Count, float64(h.Sum)/unit, buckets, labels...)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// MetricNames returns the names of the node's own metric families (the Go
// and process collectors' aside), Raft-only ones included; docs/metrics.md
// documents each.
func MetricNames() []string {
	var out []string
	for _, m := range append(append([]*metric(nil), raftMetrics...), commonMetrics...) {
		out = append(out, m.name)
	}
	return out
}
