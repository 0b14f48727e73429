package wire

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"testing"
)

// TestSnapshotChunksDecode: the chunks' own decoders read what the codec
// writes, byte for byte, and refuse a damaged body.
func TestSnapshotChunksDecode(t *testing.T) {
	data := make([]byte, SnapshotChunkSize)
	_, _ = rand.Read(data)
	for _, in := range []any{&SnapshotChunk{Size: 1 << 30, Data: data}, &SnapshotChunk{Data: data[:10]}, &SnapshotChunk{},
		&SnapshotRestoreChunkRequest{Offset: 12345, Data: data}, &SnapshotRestoreChunkRequest{}} {
		var buf bytes.Buffer
		if err := WriteFrame(&buf, &Header{Seq: 1}, in, 0); err != nil {
			t.Fatal(err)
		}
		f, err := ReadFrame(bufio.NewReader(&buf), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		switch v := in.(type) {
		case *SnapshotChunk:
			var out SnapshotChunk
			if err := f.Decode(&out); err != nil || out.Size != v.Size || !bytes.Equal(out.Data, v.Data) {
				t.Errorf("chunk of %d bytes, size %d: got %d bytes, size %d, %v", len(v.Data), v.Size, len(out.Data), out.Size, err)
			}
			if len(f.body) > 3 {
				var bad SnapshotChunk
				damaged := &Frame{body: f.body[:len(f.body)-3]}
				if err := damaged.Decode(&bad); err == nil && len(v.Data) > 0 {
					t.Error("a cut chunk decoded")
				}
			}
		case *SnapshotRestoreChunkRequest:
			var out SnapshotRestoreChunkRequest
			if err := f.Decode(&out); err != nil || out.Offset != v.Offset || !bytes.Equal(out.Data, v.Data) {
				t.Errorf("upload chunk of %d bytes at %d: got %d bytes at %d, %v", len(v.Data), v.Offset, len(out.Data), out.Offset, err)
			}
		}
	}
}

func BenchmarkSnapshotChunkDecode(b *testing.B) {
	var buf bytes.Buffer
	if err := WriteFrame(&buf, &Header{Seq: 1}, &SnapshotChunk{Size: 1 << 30, Data: make([]byte, SnapshotChunkSize)}, 0); err != nil {
		b.Fatal(err)
	}
	f, err := ReadFrame(bufio.NewReader(bytes.NewReader(buf.Bytes())), 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("own", func(b *testing.B) {
		b.SetBytes(SnapshotChunkSize)
		for i := 0; i < b.N; i++ {
			var out SnapshotChunk
			if err := f.Decode(&out); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same fields through the reflective codec, as before.
	type codecChunk struct {
		Size uint64 `codec:"size,omitempty"`
		Data []byte `codec:"data"`
	}
	b.Run("codec", func(b *testing.B) {
		b.SetBytes(SnapshotChunkSize)
		for i := 0; i < b.N; i++ {
			var out codecChunk
			if err := f.Decode(&out); err != nil {
				b.Fatal(err)
			}
		}
	})
}
