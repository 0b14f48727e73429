package snapfile

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/discoverd/discoverd/internal/codes"
)

// file returns a backup file of body with a header that matches it.
func file(body []byte) ([]byte, *Header) {
	h := &Header{Version: Version, Index: 42, Term: 3, Applied: 57, Created: time.UnixMilli(1_800_000_000_123).UTC(),
		Size: uint64(len(body)), SHA256: sha256.Sum256(body)}
	return append(h.Marshal(), body...), h
}

func TestSnapfile_HeaderRoundTrips(t *testing.T) {
	data, want := file([]byte("the state machine's snapshot"))
	got, err := Verify(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Verify of an intact file: %v", err)
	}
	if *got != *want {
		t.Errorf("header = %+v, want %+v", got, want)
	}
	if len(want.Marshal()) != HeaderSize {
		t.Errorf("a header is %d bytes, HeaderSize says %d", len(want.Marshal()), HeaderSize)
	}
	body, err := io.ReadAll(got.BodyReader(bytes.NewReader(data[HeaderSize:])))
	if err != nil || string(body) != "the state machine's snapshot" {
		t.Errorf("BodyReader = %q, %v", body, err)
	}
}

// TestSnapfile_DamageIsNamed: every way a file can be damaged or foreign is
// refused by Verify, by the Checker a file is written through, and says
// what is wrong; each error is an ErrNotSnapshot and an invalid_argument.
func TestSnapfile_DamageIsNamed(t *testing.T) {
	good, _ := file(bytes.Repeat([]byte("state "), 1000))
	with := func(at int, b byte) []byte {
		d := append([]byte(nil), good...)
		d[at] = b
		return d
	}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "it is empty"},
		{"text", []byte("hello, this is not a snapshot at all, it is a text file of some length"), "magic bytes"},
		{"line endings converted", bytes.Replace(good, []byte("\r\n"), []byte("\n"), 1), "magic bytes"},
		{"seven-bit", with(0, 0x09), "magic bytes"},
		{"a newer format", with(9, 2), "format version 2"},
		{"header length", with(11, 90), "header claims 90 bytes"},
		{"index flipped", with(13, good[13]^1), "header is damaged"},
		{"checksum flipped", with(60, good[60]^1), "header is damaged"},
		{"ends in the header", good[:50], "ends within its header"},
		{"body flipped", with(HeaderSize+100, 'X'), "body is damaged"},
		{"truncated body", good[:len(good)-1], "it is truncated"},
		{"bytes after the body", append(append([]byte(nil), good...), '\n'), "bytes after the"},
	}
	for _, tc := range cases {
		_, err := Verify(bytes.NewReader(tc.data))
		check := func(how string, err error) {
			t.Helper()
			switch {
			case err == nil:
				t.Errorf("%s: %s accepted it", tc.name, how)
			case !strings.Contains(err.Error(), tc.want):
				t.Errorf("%s: %s: %v, want it to say %q", tc.name, how, err, tc.want)
			case !errors.Is(err, ErrNotSnapshot) || codes.Of(err) != codes.CodeInvalidArgument:
				t.Errorf("%s: %s: %v is not an ErrNotSnapshot and invalid_argument", tc.name, how, err)
			}
		}
		check("Verify", err)
		var c Checker
		_, werr := c.Write(tc.data)
		_, derr := c.Done()
		check("Checker", errors.Join(werr, derr))
	}
}

// TestSnapfile_CheckerTakesAnyChunking: a file written through a Checker
// in pieces of any size is checked as a whole.
func TestSnapfile_CheckerTakesAnyChunking(t *testing.T) {
	data, want := file(bytes.Repeat([]byte{1, 2, 3, 4, 5}, 777))
	for _, size := range []int{1, 7, HeaderSize - 1, HeaderSize, HeaderSize + 1, 1000, len(data)} {
		var c Checker
		for rest := data; len(rest) > 0; {
			n := min(size, len(rest))
			if _, err := c.Write(rest[:n]); err != nil {
				t.Fatalf("chunks of %d: Write: %v", size, err)
			}
			rest = rest[n:]
		}
		got, err := c.Done()
		if err != nil || *got != *want {
			t.Errorf("chunks of %d: Done = %+v, %v; want %+v", size, got, err, want)
		}
	}
}
