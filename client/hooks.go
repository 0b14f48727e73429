package client

// Hooks: callbacks a program sets in Config to learn what the client does
// behind the scenes.

// HeartbeatFunc is Config.OnHeartbeat: called once per registration after
// each of its heartbeats, with nil when the cluster acknowledged it, or the
// error — ErrNotFound when the instance had expired (this client was cut
// off for longer than its TTL) and is being registered again, another
// error when the heartbeat did not get through (it is retried in
// 200–400 ms; after ErrPermissionDenied, at the usual interval, ~TTL/3). It is called from the client's heartbeat loop, without the
// client's lock held, and holds that loop up while it runs: keep it quick.
// It is not called for heartbeats cut short by Close.
type HeartbeatFunc func(name, addr string, err error)

// heartbeatReport is one call of Config.OnHeartbeat, collected under the
// client's lock and made after it is released.
type heartbeatReport struct {
	key regKey
	err error
}

// noteHeartbeat adds r's outcome to reports if a hook wants it.
func (c *Client) noteHeartbeat(reports []heartbeatReport, r *registration, err error) []heartbeatReport {
	if c.cfg.OnHeartbeat == nil {
		return reports
	}
	return append(reports, heartbeatReport{key: r.key, err: err})
}

// reportHeartbeats calls Config.OnHeartbeat for each report, in order.
func (c *Client) reportHeartbeats(reports []heartbeatReport) {
	for _, r := range reports {
		c.cfg.OnHeartbeat(r.key.name, r.key.addr, r.err)
	}
}
