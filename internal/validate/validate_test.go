package validate_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
	"github.com/discoverd/discoverd/internal/validate"
)

// check asserts err is nil when want is "", else that it wraps
// ErrInvalidArgument and its message contains want.
func check(t *testing.T, what string, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Errorf("%s: unexpected error %v", what, err)
		}
		return
	}
	if err == nil {
		t.Errorf("%s: accepted, want an error about %q", what, want)
		return
	}
	if !errors.Is(err, codes.ErrInvalidArgument) {
		t.Errorf("%s: %v does not wrap ErrInvalidArgument", what, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s: message %q does not mention %q", what, err, want)
	}
}

func TestValidate_Name(t *testing.T) {
	cases := []struct {
		name string
		want string // "" for valid, else a fragment of the message
	}{
		{"web", ""},
		{"a", ""},
		{"0", ""},
		{"Web-1.prod_eu", ""},
		{"9lives", ""},
		{strings.Repeat("n", validate.MaxNameLen), ""},
		{"", "empty"},
		{strings.Repeat("n", validate.MaxNameLen+1), "129 bytes, the limit is 128"},
		{"-web", `'-' at byte 0`},
		{".web", `'.' at byte 0`},
		{"_web", `'_' at byte 0`},
		{"web api", `' ' at byte 3`},
		{"web/api", `'/' at byte 3`},
		{"web:80", `':' at byte 3`},
		{"web\x00", `'\x00' at byte 3`},
		{"web\n", `'\n' at byte 3`},
		{"wéb", "at byte 1"},
	}
	for _, c := range cases {
		check(t, fmt.Sprintf("Name(%.40q)", c.name), validate.Name(c.name), c.want)
	}
}

func TestValidate_Addr(t *testing.T) {
	host255 := strings.Repeat("h", 255)
	cases := []struct {
		addr string
		want string
	}{
		{"10.0.0.1:80", ""},
		{"127.0.0.1:1", ""},
		{"127.0.0.1:65535", ""},
		{"[::1]:80", ""},
		{"[fe80::1%eth0]:8080", ""},
		{"[2001:db8::1]:443", ""},
		{"localhost:1111", ""},
		{"db-1.eu.example.com:5432", ""},
		{host255 + ":65535", ""}, // exactly MaxAddrLen
		{"", "address is empty"},
		{"[example.com]:80", "brackets are only for IPv6"},
		{"[10.0.0.1]:80", "brackets are only for IPv6"},
		{host255 + "h:65535", "262 bytes, the limit is 261"},
		{"web", "not host:port"},
		{"::1:80", "not host:port"},
		{"h:80:90", "not host:port"},
		{"[::1:80", "not host:port"},
		{":80", "has no host"},
		{"[]:80", "has no host"},
		{"h:", `port ""`},
		{"h:0", `port "0"`},
		{"h:65536", `port "65536"`},
		{"h:99999999999999999999", "port"},
		{"h:+80", `port "+80"`},
		{"h:-80", `port "-80"`},
		{"h:080", `port "080"`},
		{"h:00", `port "00"`},
		{"h:8o", `port "8o"`},
		{"h: 80", `port " 80"`},
		{"h:80 ", `port "80 "`},
		{"h:http", `port "http"`},
		{"my host:80", "control or space character"},
		{" h:80", "control or space character"},
		{"h\t:80", "control or space character"},
		{"h\x00:80", "control or space character"},
		{"h\x7f:80", "control or space character"},
		{"h\n:80", "control or space character"},
		{"[::1 ]:80", "control or space character"},
	}
	for _, c := range cases {
		check(t, fmt.Sprintf("Addr(%.40q)", c.addr), validate.Addr(c.addr), c.want)
	}
}

// attrsOf returns n attributes with keys of keyLen and values of valLen bytes
// (keys are made distinct by their last bytes).
func attrsOf(n, keyLen, valLen int) map[string]string {
	m := make(map[string]string, n)
	for i := 0; i < n; i++ {
		suffix := fmt.Sprintf("%03d", i)
		m[strings.Repeat("k", keyLen-len(suffix))+suffix] = strings.Repeat("v", valLen)
	}
	return m
}

func TestValidate_Attrs(t *testing.T) {
	cases := []struct {
		name  string
		attrs map[string]string
		want  string
	}{
		{"nil", nil, ""},
		{"empty", map[string]string{}, ""},
		{"empty value", map[string]string{"k": ""}, ""},
		{"count at limit", attrsOf(validate.MaxAttrs, 4, 1), ""},
		{"count over limit", attrsOf(validate.MaxAttrs+1, 4, 1), "65 attributes, the limit is 64"},
		{"key at limit", attrsOf(1, validate.MaxAttrKeyLen, 1), ""},
		{"key over limit", attrsOf(1, validate.MaxAttrKeyLen+1, 1), "129 bytes, the limit is 128"},
		{"empty key", map[string]string{"": "v"}, "attribute key is empty"},
		{"value at limit", attrsOf(1, 4, validate.MaxAttrValLen), ""},
		{"value over limit", attrsOf(1, 4, validate.MaxAttrValLen+1), "value is 1025 bytes, the limit is 1024"},
		// 16 attributes of 128+896 = 1024 bytes: 16384, exactly MaxAttrsBytes.
		{"total at limit", attrsOf(16, 128, 896), ""},
		{"total over limit", attrsOf(16, 128, 897), "attributes total 16400 bytes, the limit is 16384"},
		{"total over limit by one byte", func() map[string]string {
			m := attrsOf(16, 128, 896)
			m["x"] = ""
			return m
		}(), "attributes total 16385 bytes"},
	}
	for _, c := range cases {
		check(t, "Attrs("+c.name+")", validate.Attrs(c.attrs), c.want)
	}
}

func TestValidate_TTL(t *testing.T) {
	cases := []struct {
		ttl  time.Duration
		want string
	}{
		{0, ""}, // the default
		{time.Second, ""},
		{10 * time.Second, ""},
		{24 * time.Hour, ""},
		{999 * time.Millisecond, "ttl 999ms is out of range: allowed 1s to 24h0m0s"},
		{time.Second - 1, "out of range"},
		{time.Nanosecond, "out of range"},
		{24*time.Hour + time.Nanosecond, "ttl 24h0m0.000000001s is out of range"},
		{-time.Second, "ttl -1s is out of range"},
	}
	for _, c := range cases {
		check(t, fmt.Sprintf("TTL(%v)", c.ttl), validate.TTL(c.ttl), c.want)
	}
}

func TestValidate_RequestID(t *testing.T) {
	cases := []struct {
		id   string
		want string
	}{
		{"", ""}, // optional
		{"0123456789abcdef0123456789abcdef", ""},
		{strings.Repeat("x", validate.MaxRequestID), ""},
		{strings.Repeat("x", validate.MaxRequestID+1), "request id is 65 bytes, the limit is 64"},
	}
	for _, c := range cases {
		check(t, fmt.Sprintf("RequestID(%d bytes)", len(c.id)), validate.RequestID(c.id), c.want)
	}
}

func TestValidate_RegistrationAndInstance(t *testing.T) {
	cases := []struct {
		name, addr string
		attrs      map[string]string
		ttl        time.Duration
		want       string
	}{
		{"web", "h:80", map[string]string{"k": "v"}, time.Second, ""},
		{"", "h:80", nil, 0, "service name is empty"},
		{"web", "h:080", nil, 0, `port "080"`},
		{"web", "h:80", map[string]string{"": "v"}, 0, "attribute key is empty"},
		{"web", "h:80", nil, time.Millisecond, "ttl 1ms"},
	}
	for _, c := range cases {
		check(t, fmt.Sprintf("Registration(%q, %q)", c.name, c.addr), validate.Registration(c.name, c.addr, c.attrs, c.ttl), c.want)
	}
	check(t, "Instance(ok)", validate.Instance("web", "h:80"), "")
	check(t, "Instance(bad name)", validate.Instance("-", "h:80"), "service name")
	check(t, "Instance(bad addr)", validate.Instance("web", "h"), "not host:port")
}

// TestValidate_TextIsUTF8WithoutControls: addresses, attribute keys and
// values and request ids are UTF-8 text without control characters, and
// keys hold no '='; text beyond ASCII is welcome.
func TestValidate_TextIsUTF8WithoutControls(t *testing.T) {
	ok := []map[string]string{
		{"zone": "zürich"}, {"城市": "東京"}, {"emoji": "🚀"}, {"k": ""}, {"path": "/a/b?c=d"}, {"v": "a=b"},
	}
	for _, attrs := range ok {
		if err := validate.Attrs(attrs); err != nil {
			t.Errorf("validate.Attrs(%q) = %v, want nil", attrs, err)
		}
	}
	bad := map[string]map[string]string{
		"byte 0 of a value that is not UTF-8": {"k": "\xff"},
		"a truncated sequence":                {"k": "z\xc3"},
		"an overlong encoding":                {"k": "\xc0\xaf"},
		"a surrogate":                         {"k": "\xed\xa0\x80"},
		"a key that is not UTF-8":             {"\xfek": "v"},
		"'=' in a key":                        {"a=b": "v"},
		"a tab in a value":                    {"k": "a\tb"},
		"DEL in a key":                        {"k\x7f": "v"},
		"a C1 control":                        {"k": "a\u009bb"},
		"NUL":                                 {"k": "\x00"},
	}
	for what, attrs := range bad {
		if err := validate.Attrs(attrs); !errors.Is(err, codes.ErrInvalidArgument) {
			t.Errorf("%s: validate.Attrs(%q) = %v, want invalid_argument", what, attrs, err)
		}
	}
	for _, addr := range []string{"h\xff:80", "h\u0085:80", "\xe2:80"} {
		if err := validate.Addr(addr); !errors.Is(err, codes.ErrInvalidArgument) {
			t.Errorf("validate.Addr(%q) = %v, want invalid_argument", addr, err)
		}
	}
	if err := validate.Addr("bücher.example:80"); err != nil {
		t.Errorf("an IDN host: %v", err)
	}
	for _, id := range []string{"a\x00", "\xff", "x\ny"} {
		if err := validate.RequestID(id); !errors.Is(err, codes.ErrInvalidArgument) {
			t.Errorf("validate.RequestID(%q) = %v, want invalid_argument", id, err)
		}
	}
	if err := validate.RequestID("0123456789abcdef"); err != nil {
		t.Errorf("a hex request id: %v", err)
	}
}

func TestValidate_Meta(t *testing.T) {
	if err := validate.Meta("db", nil); err != nil {
		t.Errorf("empty metadata: %v", err)
	}
	if err := validate.Meta("db", make([]byte, validate.MaxMetaBytes)); err != nil {
		t.Errorf("64 KiB of metadata: %v", err)
	}
	if err := validate.Meta("db", []byte{0, 0xff, '\n'}); err != nil {
		t.Errorf("binary metadata: %v", err)
	}
	err := validate.Meta("db", make([]byte, validate.MaxMetaBytes+1))
	if !errors.Is(err, codes.ErrTooLarge) || !strings.Contains(err.Error(), "65537 bytes, the limit is 65536") {
		t.Errorf("64 KiB + 1: %v, want too_large naming both sizes", err)
	}
	check(t, "Meta(bad name)", validate.Meta("db/x", nil), `'/' at byte 2`)
}
