package rpcconn

import (
	"context"
	"sync"
)

// Pool keeps one open connection per address and redials broken ones.
type Pool struct {
	opts Options

	mu     sync.Mutex
	conns  map[string]*Conn
	closed bool
}

// NewPool returns an empty pool.
func NewPool(opts Options) *Pool { return &Pool{opts: opts, conns: map[string]*Conn{}} }

// Get returns an open connection to addr, dialling if needed.
func (p *Pool) Get(ctx context.Context, addr string) (*Conn, error) {
	p.mu.Lock()
	c := p.conns[addr]
	p.mu.Unlock()
	if c != nil && c.Err() == nil {
		return c, nil
	}
	nc, err := Dial(ctx, addr, p.opts)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = nc.Close()
		return nil, errPoolClosed
	}
	if c := p.conns[addr]; c != nil && c.Err() == nil {
		_ = nc.Close() // someone else dialled first
		return c, nil
	}
	p.conns[addr] = nc
	return nc, nil
}

// Call is Get followed by Conn.Call.
func (p *Pool) Call(ctx context.Context, addr, method string, forwarded bool, req, resp any) error {
	c, err := p.Get(ctx, addr)
	if err != nil {
		return err
	}
	return c.Call(ctx, method, forwarded, req, resp)
}

// Close closes every connection.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = map[string]*Conn{}
}
