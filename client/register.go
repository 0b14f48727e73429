package client

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/discoverd/discoverd/internal/validate"
	"github.com/discoverd/discoverd/internal/wire"
)

type regKey struct{ name, addr string }

// registration is one instance this client keeps alive. Its fields are
// guarded by Client.mu.
type registration struct {
	key   regKey
	attrs map[string]string
	ttl   time.Duration
	index uint64        // the index of this client's latest registration of it
	next  time.Time     // when its next heartbeat is due
	busy  bool          // in a heartbeat in flight, or being registered again
	rereg chan struct{} // closed when a registration-again in flight ends; nil if none
}

// Register registers this host's address with port under name and keeps it
// alive with heartbeats until Unregister or Close. Registering the same name
// and port again replaces the attributes.
func (c *Client) Register(name string, port int, attrs map[string]string) error {
	ctx, cancel := c.withTimeout()
	defer cancel()
	return c.RegisterContext(ctx, name, port, attrs)
}

// RegisterContext is Register with a context.
func (c *Client) RegisterContext(ctx context.Context, name string, port int, attrs map[string]string) error {
	if err := checkNamePort(name, port); err != nil {
		return err
	}
	host, err := c.host()
	if err != nil {
		return err
	}
	return c.RegisterWithHostContext(ctx, name, host, port, attrs)
}

// RegisterWithHost registers host:port under name (see Register).
func (c *Client) RegisterWithHost(name, host string, port int, attrs map[string]string) error {
	ctx, cancel := c.withTimeout()
	defer cancel()
	return c.RegisterWithHostContext(ctx, name, host, port, attrs)
}

// RegisterWithHostContext is RegisterWithHost with a context.
func (c *Client) RegisterWithHostContext(ctx context.Context, name, host string, port int, attrs map[string]string) error {
	return c.RegisterAddr(ctx, name, net.JoinHostPort(host, strconv.Itoa(port)), attrs, 0)
}

// RegisterAddr registers addr (host:port) under name with a TTL (0: the
// client's default) and keeps it alive with heartbeats every ~TTL/3 until
// Unregister or Close. It returns once the registration is committed.
func (c *Client) RegisterAddr(ctx context.Context, name, addr string, attrs map[string]string, ttl time.Duration) error {
	if ttl == 0 {
		ttl = c.cfg.TTL
	}
	if err := validate.Registration(name, addr, attrs, ttl); err != nil {
		return err
	}
	attrs = copyAttrs(attrs)
	index, err := c.registerOnce(ctx, name, addr, attrs, ttl)
	if err != nil {
		return err
	}
	key := regKey{name, addr}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		// Close ran while this registration was in flight: take it back
		// (best effort) rather than leave an instance nobody heartbeats.
		_ = c.unregister(ctx, name, addr, index)
		return ErrClosed
	}
	defer c.mu.Unlock()
	if r := c.regs[key]; r != nil {
		r.attrs, r.ttl, r.index = attrs, ttl, max(r.index, index)
		r.next = time.Now().Add(jitter(ttl / 3))
		return nil
	}
	c.regs[key] = &registration{key: key, attrs: attrs, ttl: ttl, index: index, next: time.Now().Add(jitter(ttl / 3))}
	c.startHeartbeats()
	return nil
}

func copyAttrs(a map[string]string) map[string]string {
	if a == nil {
		return nil
	}
	out := make(map[string]string, len(a))
	for k, v := range a {
		out[k] = v
	}
	return out
}

func (c *Client) registerOnce(ctx context.Context, name, addr string, attrs map[string]string, ttl time.Duration) (uint64, error) {
	var resp wire.WriteResponse
	req := &wire.RegisterRequest{Name: name, Addr: addr, Attrs: attrs, TTLMillis: ttl.Milliseconds(), RequestID: newRequestID()}
	if err := c.call(ctx, wire.MethodRegister, req, &resp); err != nil {
		return 0, fmt.Errorf("register %s %s: %w", name, addr, err)
	}
	c.observe(resp.Index)
	return resp.Index, nil
}

// jitter returns d ± 10%.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	spread := d / 5
	return d - spread/2 + rand.N(spread+1)
}

// Unregister removes this host's port from name and stops its heartbeats.
func (c *Client) Unregister(name string, port int) error {
	ctx, cancel := c.withTimeout()
	defer cancel()
	return c.UnregisterContext(ctx, name, port)
}

// UnregisterContext is Unregister with a context.
func (c *Client) UnregisterContext(ctx context.Context, name string, port int) error {
	if err := checkNamePort(name, port); err != nil {
		return err
	}
	host, err := c.host()
	if err != nil {
		return err
	}
	return c.UnregisterAddr(ctx, name, net.JoinHostPort(host, strconv.Itoa(port)))
}

// UnregisterAddr removes addr from name and stops its heartbeats. It fails
// with ErrNotFound if the instance is not registered.
//
// An instance this client registered is removed only if its last
// registration is still this client's: if another registrant (another
// process, another client) has registered the same instance since, it is
// left in place for that registrant, and UnregisterAddr fails with
// ErrNotFound saying so. An instance this client did not register is
// removed unconditionally (as `discoverd unregister` does).
func (c *Client) UnregisterAddr(ctx context.Context, name, addr string) error {
	if err := validate.Instance(name, addr); err != nil {
		return err
	}
	key := regKey{name, addr}
	c.mu.Lock()
	r := c.regs[key]
	delete(c.regs, key)
	var rereg chan struct{}
	if r != nil {
		rereg = r.rereg
	}
	c.mu.Unlock()
	if rereg != nil {
		<-rereg // a registration-again in flight must not land after the unregistration
	}
	var index uint64
	if r != nil {
		c.mu.Lock()
		index = r.index
		c.mu.Unlock()
	}
	return c.unregister(ctx, name, addr, index)
}

// unregister removes an instance; with ifIndex (not 0), only if its last
// registration is the one at ifIndex.
func (c *Client) unregister(ctx context.Context, name, addr string, ifIndex uint64) error {
	var resp wire.WriteResponse
	req := &wire.UnregisterRequest{Name: name, Addr: addr, RequestID: newRequestID(), IfIndex: ifIndex}
	if err := c.call(ctx, wire.MethodUnregister, req, &resp); err != nil {
		return fmt.Errorf("unregister %s %s: %w", name, addr, err)
	}
	c.observe(resp.Index)
	return nil
}

// checkNamePort validates what can be checked before the host is known, so
// bad input fails fast and without a network lookup.
func checkNamePort(name string, port int) error {
	if err := validate.Name(name); err != nil {
		return err
	}
	if port < 1 || port > 65535 {
		return fmt.Errorf("port %d: want 1-65535: %w", port, ErrInvalidArgument)
	}
	return nil
}

// host returns the address Register uses for this machine.
func (c *Client) host() (string, error) {
	if c.cfg.Host != "" {
		return c.cfg.Host, nil
	}
	// The local IP this machine would use to reach the first server: a UDP
	// "connection" sends nothing but picks the route.
	u, err := net.Dial("udp", c.servers[0])
	if err != nil {
		return "", fmt.Errorf("find this host's address (set Config.Host or $DISCOVERD_HOST): %w", err)
	}
	defer u.Close()
	host, _, _ := net.SplitHostPort(u.LocalAddr().String())
	return host, nil
}
