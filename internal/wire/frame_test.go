package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
)

// allocated returns the bytes f allocated, averaged over n runs.
func allocated(n int, f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(n)
}

// TestFrame_BufferGrowsWithTheBytesThatArrive: a frame that claims 1 MiB
// (or 64 MiB) and brings 100 bytes makes the reader hold a few KiB, not
// what it claims; a frame that brings all its bytes is read whole.
func TestFrame_BufferGrowsWithTheBytesThatArrive(t *testing.T) {
	for _, claim := range []uint32{1 << 20, 64 << 20} {
		head := []byte{byte(claim >> 24), byte(claim >> 16), byte(claim >> 8), byte(claim)}
		stalled := append(head, bytes.Repeat([]byte{0x80}, 100)...)
		per := allocated(50, func() {
			_, err := ReadFrame(bufio.NewReaderSize(bytes.NewReader(stalled), 16), int(claim))
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("a frame cut short: %v", err)
			}
		})
		if per > 2*frameStep {
			t.Errorf("a frame claiming %d bytes and bringing 100 allocated %d bytes, want at most %d", claim, per, 2*frameStep)
		}
	}
	// A whole large frame still arrives whole.
	var b bytes.Buffer
	body := map[string]string{"k": string(bytes.Repeat([]byte("x"), 300<<10))}
	if err := WriteFrame(&b, &Header{Seq: 9, Method: "M"}, body, 0); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFrame(bufio.NewReader(&b), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := f.Decode(&got); err != nil || len(got["k"]) != 300<<10 || f.Header.Seq != 9 {
		t.Fatalf("large frame: seq %d, %d bytes, %v", f.Header.Seq, len(got["k"]), err)
	}
	// And a small one costs its own size.
	b.Reset()
	if err := WriteFrame(&b, &Header{Seq: 1, Method: "M"}, &Empty{}, 0); err != nil {
		t.Fatal(err)
	}
	small := b.Bytes()
	r := bytes.NewReader(nil)
	if n := testing.AllocsPerRun(100, func() {
		r.Reset(small[4:])
		if _, err := readGrowing(r, len(small)-4); err != nil {
			t.Fatal(err)
		}
	}); n != 1 {
		t.Errorf("a small frame's body cost %v allocations, want 1", n)
	}
}

// TestFrame_StartedIsCalledOnceTheLengthArrives: the hook that starts the
// frame timeout runs after the length, before the body.
func TestFrame_StartedIsCalledOnceTheLengthArrives(t *testing.T) {
	var b bytes.Buffer
	if err := WriteFrame(&b, &Header{Seq: 3, Method: "M"}, &Empty{}, 0); err != nil {
		t.Fatal(err)
	}
	whole := b.Bytes()
	pr, pw := io.Pipe()
	defer pr.Close()
	called := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := ReadFrameWith(bufio.NewReader(pr), 1<<20, func() { close(called) })
		done <- err
	}()
	go func() {
		_, _ = pw.Write(whole[:4])
		<-called // the body only after the hook ran
		_, _ = pw.Write(whole[4:])
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func BenchmarkReadFrame(b *testing.B) {
	for _, size := range []int{100, 4 << 10, 256 << 10} {
		var buf bytes.Buffer
		if err := WriteFrame(&buf, &Header{Seq: 1, Method: "M"}, map[string]string{"k": string(bytes.Repeat([]byte("x"), size))}, 0); err != nil {
			b.Fatal(err)
		}
		data := buf.Bytes()
		b.Run(byteSize(size), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			r := bytes.NewReader(data)
			br := bufio.NewReaderSize(r, 4<<10)
			for range b.N {
				r.Reset(data)
				br.Reset(r)
				if _, err := ReadFrame(br, 1<<20); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func byteSize(n int) string {
	switch {
	case n >= 1<<10 && n%(1<<10) == 0:
		return itoa(n>>10) + "KiB"
	}
	return itoa(n) + "B"
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
