// Package validate holds the limits on every external input that names or
// describes an instance, shared by the RPC server (which enforces them before
// anything is proposed) and the client (which reports them early).
package validate

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/discoverd/discoverd/internal/codes"
)

// Limits. Changing them changes what clients may send; document it in docs/protocol.md.
const (
	MaxNameLen    = 128      // service name length in bytes
	MaxAddrLen    = 261      // host (255) + ':' + port (5)
	MaxAttrs      = 64       // attributes per instance
	MaxAttrKeyLen = 128      // bytes per attribute key
	MaxAttrValLen = 1024     // bytes per attribute value
	MaxAttrsBytes = 16 << 10 // all keys and values of one instance together
	MinTTL        = time.Second
	MaxTTL        = 24 * time.Hour
	DefaultTTL    = 10 * time.Second
	MaxRequestID  = 64       // bytes of a request id
	MaxHeartbeats = 1024     // instances in one heartbeat request (fits the default 1 MiB frame)
	MaxMetaBytes  = 64 << 10 // bytes of a service's metadata
)

// Name checks a service name: 1–128 bytes of [A-Za-z0-9._-], starting with a letter or digit.
func Name(name string) error {
	if name == "" {
		return codes.Invalid("service name is empty")
	}
	if len(name) > MaxNameLen {
		return codes.Invalid("service name is %d bytes, the limit is %d", len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !ok && i > 0 {
			ok = c == '.' || c == '_' || c == '-'
		}
		if !ok {
			return codes.Invalid("service name %q has %q at byte %d: use letters, digits, '.', '_' and '-', starting with a letter or digit", name, c, i)
		}
	}
	return nil
}

// Addr checks an instance address: host:port with a non-empty host and a port 1–65535.
func Addr(addr string) error {
	if addr == "" {
		return codes.Invalid("address is empty")
	}
	if len(addr) > MaxAddrLen {
		return codes.Invalid("address is %d bytes, the limit is %d", len(addr), MaxAddrLen)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return codes.Invalid("address %q is not host:port: %v", addr, err)
	}
	if host == "" {
		return codes.Invalid("address %q has no host", addr)
	}
	for i := 0; i < len(host); i++ {
		if host[i] <= ' ' || host[i] == 0x7f {
			return codes.Invalid("address %q has a control or space character in its host", addr)
		}
	}
	if at, what := badText(host); at >= 0 { // not UTF-8, or a C1 control
		return codes.Invalid("address %q has %s at byte %d of its host", addr, what, at)
	}
	// Brackets are for IPv6 literals only, so "[example.com]:80" cannot be a
	// second name for "example.com:80".
	if addr[0] == '[' {
		if ip, err := netip.ParseAddr(host); err != nil || !ip.Is6() {
			return codes.Invalid("address %q: brackets are only for IPv6 addresses", addr)
		}
	}
	// Only the canonical spelling of a port, so "h:80" and "h:080" cannot
	// name two different instances.
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 || strconv.Itoa(p) != port {
		return codes.Invalid("address %q has port %q: want a number 1-65535 without sign or leading zeros", addr, port)
	}
	return nil
}

// Attrs checks an instance's attributes against the count and size limits.
func Attrs(attrs map[string]string) error {
	if len(attrs) > MaxAttrs {
		return codes.Invalid("%d attributes, the limit is %d", len(attrs), MaxAttrs)
	}
	total := 0
	for k, v := range attrs {
		if k == "" {
			return codes.Invalid("attribute key is empty")
		}
		if len(k) > MaxAttrKeyLen {
			return codes.Invalid("attribute key %.32q... is %d bytes, the limit is %d", k, len(k), MaxAttrKeyLen)
		}
		if len(v) > MaxAttrValLen {
			return codes.Invalid("attribute %q value is %d bytes, the limit is %d", k, len(v), MaxAttrValLen)
		}
		if at, what := badText(k); at >= 0 {
			return codes.Invalid("attribute key %q has %s at byte %d", k, what, at)
		}
		if i := strings.IndexByte(k, '='); i >= 0 {
			return codes.Invalid("attribute key %q has '=' at byte %d: keys cannot hold '=' (key=value is how they are written)", k, i)
		}
		if at, what := badText(v); at >= 0 {
			return codes.Invalid("attribute %q value %q has %s at byte %d", k, v, what, at)
		}
		total += len(k) + len(v)
	}
	if total > MaxAttrsBytes {
		return codes.Invalid("attributes total %d bytes, the limit is %d", total, MaxAttrsBytes)
	}
	return nil
}

// TTL checks a registration TTL; zero means "use the default" and is accepted.
func TTL(ttl time.Duration) error {
	if ttl == 0 {
		return nil
	}
	if ttl < MinTTL || ttl > MaxTTL {
		return codes.Invalid("ttl %v is out of range: allowed %v to %v", ttl, MinTTL, MaxTTL)
	}
	return nil
}

// RequestID checks a write's request id: optional, at most 64 bytes of
// text (UTF-8, no control characters).
func RequestID(id string) error {
	if len(id) > MaxRequestID {
		return codes.Invalid("request id is %d bytes, the limit is %d", len(id), MaxRequestID)
	}
	if at, what := badText(id); at >= 0 {
		return codes.Invalid("request id %q has %s at byte %d", id, what, at)
	}
	return nil
}

// badText returns the byte offset of the first thing in s that text may
// not hold, and what it is: bytes that are not UTF-8, and control
// characters (C0, DEL and C1). -1: none. JSON consumers and the CLI's
// key=value arguments depend on it.
func badText(s string) (int, string) {
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f { // printable ASCII, the usual case
			i++
			continue
		}
		if c < 0x80 {
			return i, fmt.Sprintf("the control character %U", rune(c))
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return i, "a byte that is not UTF-8"
		}
		if unicode.IsControl(r) {
			return i, fmt.Sprintf("the control character %U", r)
		}
		i += size
	}
	return -1, ""
}

// Registration checks every field of a registration.
func Registration(name, addr string, attrs map[string]string, ttl time.Duration) error {
	if err := Name(name); err != nil {
		return err
	}
	if err := Addr(addr); err != nil {
		return err
	}
	if err := Attrs(attrs); err != nil {
		return err
	}
	return TTL(ttl)
}

// Meta checks a service's metadata: a name, and at most 64 KiB of data (any
// bytes, none included). Data beyond the limit fails with codes.ErrTooLarge.
func Meta(name string, data []byte) error {
	if err := Name(name); err != nil {
		return err
	}
	if len(data) > MaxMetaBytes {
		return fmt.Errorf("metadata of %s is %d bytes, the limit is %d (64 KiB): keep large data elsewhere and store a reference to it: %w",
			name, len(data), MaxMetaBytes, codes.ErrTooLarge)
	}
	return nil
}

// Instance checks a (service name, address) pair.
func Instance(name, addr string) error {
	if err := Name(name); err != nil {
		return err
	}
	return Addr(addr)
}
