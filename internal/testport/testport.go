// Package testport hands out loopback ports for test and benchmark servers
// that must be able to stop and start again on the same port.
//
// Ports come from 20000–32000, below the kernel's ephemeral range (32768–
// 60999 by default) that every outgoing connection's local port is drawn
// from: a port picked with ":0" is in that range, and while its server is
// stopped any client connection (another test package's, a proxy's) may be
// given it — the restart then fails with "address already in use" (seen in
// CI with an etcd member). A port is never handed out twice in one process,
// since a stopped server's port may linger in TIME_WAIT.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

// The range ports are picked from.
const (
	Low  = 20000
	High = 32000
)

var used = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// Pick returns n distinct ports on 127.0.0.1 that were free a moment ago.
func Pick(n int) ([]int, error) {
	used.Lock()
	defer used.Unlock()
	var out []int
	for attempt := 0; attempt < 4*(High-Low) && len(out) < n; attempt++ {
		port := Low + rand.IntN(High-Low)
		if used.m[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		_ = ln.Close()
		used.m[port] = true
		out = append(out, port)
	}
	if len(out) < n {
		return nil, fmt.Errorf("found only %d of %d free loopback ports in %d-%d", len(out), n, Low, High)
	}
	return out, nil
}
