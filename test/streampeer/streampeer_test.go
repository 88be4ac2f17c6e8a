// Unit tests of streampeer without a tap device or root: a SOCK_SEQPACKET
// socket pair stands in for the tap (one frame per read and per write, as a
// tap), a stream socket pair for passt's socket. They check the framing
// both ways byte for byte, the bad lengths, the end of the stream, that a
// round allocates nothing, the relay, and the command line's refusals.

package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair returns both ends of a non-blocking socket pair of type typ as
// files registered with the poller, closed at t's cleanup.
func pair(t *testing.T, typ int) (*os.File, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// rawConn returns f's RawConn, failing t on error.
func rawConn(t *testing.T, f *os.File) syscall.RawConn {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// frameOf returns a frame of n bytes whose content depends on seq.
func frameOf(n, seq int) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = byte(seq*7 + i)
	}
	return f
}

// framed returns frames in stream framing.
func framed(frames ...[]byte) []byte {
	var out []byte
	for _, f := range frames {
		out = binary.BigEndian.AppendUint32(out, uint32(len(f)))
		out = append(out, f...)
	}
	return out
}

// TestNextFrame checks nextFrame on prefixes, whole frames and bad
// lengths.
func TestNextFrame(t *testing.T) {
	min, max := frameOf(minFrame, 1), frameOf(maxFrame, 2)
	cases := []struct {
		name    string
		in      []byte
		wantLen int // frame length, 0 for none
		bad     bool
	}{
		{"empty", nil, 0, false},
		{"short prefix", []byte{0, 0, 0}, 0, false},
		{"prefix only", framed(min)[:4], 0, false},
		{"one byte short", framed(min)[:4+minFrame-1], 0, false},
		{"shortest", framed(min), minFrame, false},
		{"largest", framed(max), maxFrame, false},
		{"two frames", framed(min, max), minFrame, false},
		{"length 0", []byte{0, 0, 0, 0}, 0, true},
		{"length 13", []byte{0, 0, 0, 13}, 0, true},
		{"one over the largest", binary.BigEndian.AppendUint32(nil, maxFrame+1), 0, true},
		{"70000", binary.BigEndian.AppendUint32(nil, 70000), 0, true},
		{"all ones", []byte{0xff, 0xff, 0xff, 0xff}, 0, true},
	}
	for _, c := range cases {
		frame, n, err := nextFrame(c.in)
		if c.bad != errors.Is(err, errBadLength) {
			t.Errorf("%s: error %v, want bad length: %v", c.name, err, c.bad)
		}
		if len(frame) != c.wantLen || (c.wantLen > 0 && n != c.wantLen+hdrLen) || (c.wantLen == 0 && n != 0) {
			t.Errorf("%s: frame of %d bytes taking %d, want %d", c.name, len(frame), n, c.wantLen)
		}
		if c.wantLen > 0 && !bytes.Equal(frame, c.in[hdrLen:hdrLen+c.wantLen]) {
			t.Errorf("%s: frame is not the bytes after the prefix", c.name)
		}
	}
}

// FuzzNextFrame splits arbitrary input into frames with nextFrame: it must
// never panic, every frame must be in bounds and lie where its prefix
// says, and the walk must stop at the first bad length or incomplete frame.
func FuzzNextFrame(f *testing.F) {
	f.Add(framed(frameOf(14, 1), frameOf(60, 2)))
	f.Add([]byte{0, 0, 0, 0})
	f.Add(binary.BigEndian.AppendUint32(nil, 70000))
	f.Add(framed(frameOf(maxFrame, 3))[:100])
	f.Fuzz(func(t *testing.T, in []byte) {
		off := 0
		for {
			frame, n, err := nextFrame(in[off:])
			if err != nil || n == 0 {
				if frame != nil {
					t.Fatalf("frame with n=%d err=%v", n, err)
				}
				return
			}
			if len(frame) < minFrame || len(frame) > maxFrame || n != len(frame)+hdrLen {
				t.Fatalf("frame of %d bytes taking %d", len(frame), n)
			}
			if int(binary.BigEndian.Uint32(in[off:])) != len(frame) || &frame[0] != &in[off+hdrLen] {
				t.Fatalf("frame at %d is not where its prefix says", off)
			}
			off += n
		}
	})
}

// TestBridgeBothWays runs both directions between a fake tap and a stream
// pair: frames written to the tap arrive on passt's end in stream framing,
// and framed bytes written to passt's end in pieces of random sizes arrive
// on the tap one frame per read; all byte for byte.
func TestBridgeBothWays(t *testing.T) {
	guest, tapEnd := pair(t, unix.SOCK_SEQPACKET)
	passt, sockEnd := pair(t, unix.SOCK_STREAM)
	from := newFromTap(rawConn(t, tapEnd), rawConn(t, sockEnd))
	to := newToTap(rawConn(t, sockEnd), rawConn(t, tapEnd))
	errc := make(chan error, 2)
	go func() { errc <- from.run() }()
	go func() { errc <- to.run() }()

	rng := rand.New(rand.NewPCG(1, 2))
	const count = 500
	var frames [][]byte
	for i := 0; i < count; i++ {
		frames = append(frames, frameOf(minFrame+rng.IntN(9000), i))
	}
	frames = append(frames, frameOf(maxFrame, count))
	deadline := time.Now().Add(20 * time.Second)
	passt.SetDeadline(deadline)
	guest.SetDeadline(deadline)

	// Guest to passt: the tap's frames, framed.
	done := make(chan error, 1)
	go func() {
		for _, f := range frames {
			if _, err := guest.Write(f); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	want := framed(frames...)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(passt, got); err != nil {
		t.Fatalf("passt's end read: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("tap write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("passt's end got other bytes than the tap's frames, framed")
	}

	// Passt to guest: the stream in random pieces, frames out.
	go func() {
		for rest := want; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(20000))
			if _, err := passt.Write(rest[:n]); err != nil {
				done <- err
				return
			}
			rest = rest[n:]
		}
		done <- nil
	}()
	buf := make([]byte, maxFrame+1)
	for i, f := range frames {
		n, err := guest.Read(buf)
		if err != nil {
			t.Fatalf("tap read %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], f) {
			t.Fatalf("tap frame %d: %d bytes, want %d, or other content", i, n, len(f))
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("stream write: %v", err)
	}

	// passt closes: the socket-to-tap direction ends cleanly.
	passt.Close()
	select {
	case err := <-errc:
		if !isEnd(err) {
			t.Fatalf("after passt closed: %v, want a clean end", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no direction ended within 5 s of passt's close")
	}
}

// TestBridgeBadLength checks that a length outside the bounds ends the
// socket-to-tap direction with errBadLength, after delivering the frames
// before it.
func TestBridgeBadLength(t *testing.T) {
	for _, bad := range []uint32{0, 13, maxFrame + 1, 70000} {
		guest, tapEnd := pair(t, unix.SOCK_SEQPACKET)
		passt, sockEnd := pair(t, unix.SOCK_STREAM)
		to := newToTap(rawConn(t, sockEnd), rawConn(t, tapEnd))
		first := frameOf(100, 1)
		in := binary.BigEndian.AppendUint32(framed(first), bad)
		if _, err := passt.Write(append(in, make([]byte, 200)...)); err != nil {
			t.Fatal(err)
		}
		var err error
		for i := 0; i < 10 && err == nil; i++ {
			err = to.round()
		}
		if !errors.Is(err, errBadLength) || isEnd(err) {
			t.Errorf("length %d: %v, want a bad length error", bad, err)
		}
		buf := make([]byte, 200)
		guest.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := guest.Read(buf); err != nil || !bytes.Equal(buf[:n], first) {
			t.Errorf("length %d: the frame before it was not delivered (%d bytes, %v)", bad, n, err)
		}
	}
}

// TestBridgeNoAllocs checks that a round of each direction, one frame
// each, allocates nothing.
func TestBridgeNoAllocs(t *testing.T) {
	guest, tapEnd := pair(t, unix.SOCK_SEQPACKET)
	passt, sockEnd := pair(t, unix.SOCK_STREAM)
	from := newFromTap(rawConn(t, tapEnd), rawConn(t, sockEnd))
	to := newToTap(rawConn(t, sockEnd), rawConn(t, tapEnd))
	frame := frameOf(1500, 3)
	wire := framed(frame)
	buf := make([]byte, 2*len(wire))
	guestRC, passtRC := rawConn(t, guest), rawConn(t, passt)
	var n int
	var werr error
	readFn := func(fd uintptr) bool { n, werr = unix.Read(int(fd), buf); return werr != unix.EAGAIN }
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := unix.Write(int(guest.Fd()), frame); err != nil {
			t.Fatal(err)
		}
		if err := from.round(); err != nil {
			t.Fatal(err)
		}
		if err := passtRC.Read(readFn); err != nil || werr != nil || n != len(wire) {
			t.Fatalf("passt's end: %d bytes, %v %v", n, err, werr)
		}
		if _, err := unix.Write(int(passt.Fd()), wire); err != nil {
			t.Fatal(err)
		}
		if err := to.round(); err != nil {
			t.Fatal(err)
		}
		if err := guestRC.Read(readFn); err != nil || werr != nil || n != len(frame) {
			t.Fatalf("tap's end: %d bytes, %v %v", n, err, werr)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per round trip, want 0", allocs)
	}
}

// TestRelay runs relay mode between two clients: each one's bytes reach
// the other unchanged, both ways, and the relay ends cleanly when one
// leaves.
func TestRelay(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- relayMain([]string{"-a", a, "-b", b}, w) }()
	line := make([]byte, 6)
	if _, err := io.ReadFull(r, line); err != nil || string(line) != "ready\n" {
		t.Fatalf("relay said %q (%v), want ready", line, err)
	}
	ca, err := net.Dial("unix", a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb, err := net.Dial("unix", b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	deadline := time.Now().Add(10 * time.Second)
	ca.SetDeadline(deadline)
	cb.SetDeadline(deadline)
	ab := framed(frameOf(3000, 1), frameOf(maxFrame, 2))
	ba := framed(frameOf(20, 3))
	go ca.Write(ab)
	go cb.Write(ba)
	gotB := make([]byte, len(ab))
	if _, err := io.ReadFull(cb, gotB); err != nil || !bytes.Equal(gotB, ab) {
		t.Fatalf("a to b: %v, or other bytes", err)
	}
	gotA := make([]byte, len(ba))
	if _, err := io.ReadFull(ca, gotA); err != nil || !bytes.Equal(gotA, ba) {
		t.Fatalf("b to a: %v, or other bytes", err)
	}
	ca.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("relay: %v, want a clean end", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relay still running 5 s after a client left")
	}
}

// TestParsePeer checks peer mode's refusals and defaults.
func TestParsePeer(t *testing.T) {
	o, err := parsePeer([]string{"-socket", "/tmp/x", "-netns", "g"})
	if err != nil {
		t.Fatal(err)
	}
	if o.netns != "/run/netns/g" || o.tap != "eth0" || o.mtu != 65520 || o.wait != 10*time.Second || o.mac != nil || o.fd != -1 {
		t.Errorf("defaults: %+v", o)
	}
	for _, args := range [][]string{
		{"-netns", "g"},
		{"-socket", "/tmp/x", "-fd", "3", "-netns", "g"},
		{"-socket", "/tmp/x"},
		{"-socket", "/tmp/x", "-netns", "g", "-mtu", "70000"},
		{"-socket", "/tmp/x", "-netns", "g", "-mac", "nope"},
		{"-socket", "/tmp/x", "-netns", "g", "-tap", strings.Repeat("x", 16)},
		{"-socket", "/tmp/x", "-netns", "g", "extra"},
		{"-bogus"},
	} {
		if _, err := parsePeer(args); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
