// Tests of passt mode's stream back end on socketpairs and on listening
// sockets under /tmp: frames both ways, many per read, split anywhere,
// the largest frame, bad lengths, a second client, one-off, short writes
// on a tiny send buffer, reads that never stop short, no allocation, and
// the fuzz target of the reader.

package tap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testFrame returns frame seq of n bytes (n >= StreamMinFrame): every byte
// depends on seq and its position, and bytes 6 to 9 (the source MAC) hold
// seq, so that a torn, shifted or swapped frame shows.
func testFrame(seq, n int) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = byte(seq*131 + i*7 + i>>8)
	}
	binary.BigEndian.PutUint32(f[6:], uint32(seq))
	return f
}

// frameSeq returns the sequence number testFrame put in f.
func frameSeq(f []byte) int { return int(binary.BigEndian.Uint32(f[6:])) }

// wire returns frames as they go on the stream: each after its 4-byte
// big-endian length.
func wire(frames ...[]byte) []byte {
	var b []byte
	for _, f := range frames {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// parseWire splits a stream into frames (copies) and what follows the last
// whole one.
func parseWire(b []byte) (frames [][]byte, rest []byte) {
	for len(b) >= 4 {
		l := int(binary.BigEndian.Uint32(b))
		if len(b) < 4+l {
			break
		}
		frames = append(frames, bytes.Clone(b[4:4+l]))
		b = b[4+l:]
	}
	return frames, b
}

// peer is the other end of the stream: qemu's side.
type peer struct{ fd int }

// close closes the peer's socket, once.
func (p *peer) close() {
	if p.fd >= 0 {
		unix.Close(p.fd)
		p.fd = -1
	}
}

// write writes all of b (blocking, with the socket's 5 s time-out).
func (p *peer) write(t *testing.T, b []byte) {
	t.Helper()
	if err := writeAll(p.fd, b); err != nil {
		t.Fatalf("peer write: %v", err)
	}
}

// writeAll writes all of b to blocking socket fd, without SIGPIPE.
// Returns the first error.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// readFrames reads n frames from the stream (blocking, 5 s time-out).
func (p *peer) readFrames(t *testing.T, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := 0; i < n; i++ {
		var h [4]byte
		p.readFull(t, h[:])
		f := make([]byte, binary.BigEndian.Uint32(h[:]))
		p.readFull(t, f)
		out = append(out, f)
	}
	return out
}

// readFull fills b from the stream, failing t at end of file or time-out.
func (p *peer) readFull(t *testing.T, b []byte) {
	t.Helper()
	for len(b) > 0 {
		n, err := unix.Read(p.fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			t.Fatalf("peer read: %d, %v", n, err)
		}
		b = b[n:]
	}
}

// expectEOF checks that the stream ends (the back end closed or reset the
// connection) within the socket's time-out.
func (p *peer) expectEOF(t *testing.T) {
	t.Helper()
	var b [64]byte
	for {
		n, err := unix.Read(p.fd, b[:])
		if err == unix.EINTR {
			continue
		}
		if n == 0 && err == nil {
			return
		}
		if err == unix.ECONNRESET {
			return
		}
		t.Fatalf("peer: %d bytes, %v; want end of file", n, err)
	}
}

// timeouts gives blocking socket fd 5 s time-outs both ways.
func timeouts(t *testing.T, fd int) {
	t.Helper()
	tv := unix.Timeval{Sec: 5}
	for _, o := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, o, &tv); err != nil {
			t.Fatal(err)
		}
	}
}

// streamPair returns a connected pair: a non-blocking end for the Stream
// (owned by it once passed to NewStream) and the peer, blocking with time-
// outs, closed with the test.
func streamPair(t *testing.T) (int, *peer) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	timeouts(t, fds[1])
	p := &peer{fds[1]}
	t.Cleanup(p.close)
	return fds[0], p
}

// listenUnix returns a non-blocking listening AF_UNIX stream socket under
// /tmp (sockets on the work tree's filesystem get no connections) and its
// path, removed with the test.
func listenUnix(t *testing.T) (int, string) {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "gopasst-stream-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := dir + "/s"
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	return fd, path
}

// dial connects a peer to path, blocking with time-outs, closed with the
// test.
func dial(t *testing.T, path string) *peer {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{fd}
	t.Cleanup(p.close)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	timeouts(t, fd)
	return p
}

// testLoop is a small event loop over epoll, as the engine's: a Watcher,
// and turns that hand events to the back end, read frames on EventFrames
// (copies kept in in) and flush at the end.
type testLoop struct {
	epfd int
	buf  [][]byte
	in   [][]byte
}

// newTestLoop returns a testLoop reading RxBatch frames per Read.
func newTestLoop(t *testing.T) *testLoop {
	t.Helper()
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(epfd) })
	return &testLoop{epfd: epfd, buf: make([][]byte, RxBatch)}
}

// Watch implements Watcher: the index travels in the event's Fd field.
func (l *testLoop) Watch(fd int, events uint32, idx uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(idx)}
	err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
	if err == unix.EEXIST {
		err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
	}
	return err
}

// Unwatch implements Watcher.
func (l *testLoop) Unwatch(fd int) { unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil) }

// turn waits up to d for events and handles them as the engine does.
// Returns the events Ready reported, or its first error.
func (l *testLoop) turn(s *Stream, d time.Duration) (Event, error) {
	var evs [8]unix.EpollEvent
	n, err := unix.EpollWait(l.epfd, evs[:], int(d/time.Millisecond))
	if err != nil {
		n = 0
	}
	var all Event
	for _, e := range evs[:n] {
		ev, err := s.Ready(uint32(e.Fd), e.Events)
		if err != nil {
			return all, err
		}
		all |= ev
		if ev&EventFrames != 0 {
			for {
				k, _ := s.Read(l.buf)
				for _, f := range l.buf[:k] {
					l.in = append(l.in, bytes.Clone(f))
				}
				if k < len(l.buf) {
					break
				}
			}
		}
	}
	s.Flush()
	return all, nil
}

// waitEvent turns the loop until Ready reports want, failing t on an error
// or after 5 s. Returns every event seen meanwhile.
func (l *testLoop) waitEvent(t *testing.T, s *Stream, want Event) Event {
	t.Helper()
	var all Event
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
		ev, err := l.turn(s, 10*time.Millisecond)
		if err != nil {
			t.Fatalf("Ready: %v", err)
		}
		if all |= ev; ev&want != 0 {
			return all
		}
	}
	t.Fatalf("no event %#x in 5 s (saw %#x)", want, all)
	return 0
}

// waitErr turns the loop until Ready returns an error, and returns it,
// failing t after 5 s.
func (l *testLoop) waitErr(t *testing.T, s *Stream) error {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
		if _, err := l.turn(s, 10*time.Millisecond); err != nil {
			return err
		}
	}
	t.Fatal("no error from Ready in 5 s")
	return nil
}

// waitFrames turns the loop until n frames were read in all, failing t
// after d.
func (l *testLoop) waitFrames(t *testing.T, s *Stream, n int, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); len(l.in) < n && time.Now().Before(end); {
		if _, err := l.turn(s, 10*time.Millisecond); err != nil {
			t.Fatalf("Ready: %v", err)
		}
	}
	if len(l.in) < n {
		t.Fatalf("%d frames read, want %d", len(l.in), n)
	}
}

// sameFrames fails t unless got and want hold the same frames in order.
func sameFrames(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d frames, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: frame %d differs (%d bytes, want %d)", what, i, len(got[i]), len(want[i]))
		}
	}
}

// queue commits frames on s through Frame, failing t if the buffer is
// not MaxFrame bytes.
func queue(t *testing.T, s *Stream, frames ...[]byte) {
	t.Helper()
	for _, f := range frames {
		b := s.Frame()
		if len(b) != MaxFrame || cap(b) != MaxFrame {
			t.Fatalf("Frame: %d/%d bytes, want %d", len(b), cap(b), MaxFrame)
		}
		s.Commit(copy(b, f))
	}
}

// newStream makes a Stream closed with the test.
func newStream(t *testing.T, listenFD, connFD int, oneOff bool, queueLen int) *Stream {
	s := NewStream(listenFD, connFD, oneOff, queueLen, nil)
	t.Cleanup(func() { s.Close() })
	return s
}

// TestStreamBothWays: frames from the peer arrive whole through the loop
// (Ready, Read); frames queued with Frame, Reserve, Commit and
// CommitOffload reach the peer after their lengths, byte for byte; the
// counters agree; Offloads is the zero value.
func TestStreamBothWays(t *testing.T) {
	a, p := streamPair(t)
	s := newStream(t, -1, a, false, 8)
	l := newTestLoop(t)
	if err := s.Watch(l); err != nil {
		t.Fatal(err)
	}
	in := [][]byte{testFrame(1, 14), testFrame(2, 60), testFrame(3, 1514), testFrame(4, 9014)}
	p.write(t, wire(in...))
	l.waitFrames(t, s, len(in), 5*time.Second)
	sameFrames(t, "from the peer", l.in, in)

	if s.Offloads() != (Offloads{}) {
		t.Fatalf("offloads %+v", s.Offloads())
	}
	out := [][]byte{testFrame(10, 14), testFrame(11, 1514), testFrame(12, 100), testFrame(13, 4000), testFrame(14, 64), testFrame(15, 65)}
	queue(t, s, out[:2]...)
	bufs := make([][]byte, 3)
	if n := s.Reserve(bufs); n != 3 {
		t.Fatalf("Reserve: %d buffers", n)
	}
	for i, b := range bufs {
		s.Commit(copy(b, out[2+i]))
	}
	b := s.Frame()
	s.CommitOffload(copy(b, out[5]), &VnetHdr{})
	if s.Queued() != len(out) {
		t.Fatalf("%d queued", s.Queued())
	}
	s.Flush()
	sameFrames(t, "to the peer", p.readFrames(t, len(out)), out)

	st := s.Stats
	var bin, bout uint64
	for _, f := range in {
		bin += uint64(len(f))
	}
	for _, f := range out {
		bout += uint64(len(f))
	}
	if st.FramesIn != 4 || st.BytesIn != bin || st.FramesOut != 6 || st.BytesOut != bout || st.DroppedOut != 0 || st.Partial != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestStreamManyPerRead: 500 small frames written at once come in with one
// recvmsg and go out as views in place (nothing moved), RxBatch per Read
// and the rest in the last; the views lie back to back in the buffer,
// each after its length.
func TestStreamManyPerRead(t *testing.T) {
	a, p := streamPair(t)
	s := newStream(t, -1, a, false, 8)
	var in [][]byte
	for i := 0; i < 500; i++ {
		in = append(in, testFrame(i, 14+i%200))
	}
	p.write(t, wire(in...))
	frames := make([][]byte, RxBatch)
	var got [][]byte
	var counts []int
	off := 4
	for {
		n, err := s.Read(frames)
		if err != nil {
			t.Fatal(err)
		}
		counts = append(counts, n)
		for i := 0; i < n; i++ {
			// In place: each view where the stream put it, after its
			// length, the next one right after.
			if &frames[i][0] != &s.rx[off] {
				t.Fatalf("frame %d is not at offset %d of the buffer", len(got), off)
			}
			off += len(frames[i]) + 4
			got = append(got, bytes.Clone(frames[i]))
		}
		if n < len(frames) {
			break
		}
	}
	sameFrames(t, "500 frames", got, in)
	if fmt.Sprint(counts) != "[128 128 128 116]" {
		t.Fatalf("frames per Read %v", counts)
	}
	if s.Stats.Recvs != 1 || s.Stats.Moved != 0 {
		t.Fatalf("%d recvmsg calls, %d bytes moved; want 1, 0", s.Stats.Recvs, s.Stats.Moved)
	}
}

// readAll calls Read until it returns fewer frames than asked for, and
// returns copies of the frames.
func readAll(t *testing.T, s *Stream, frames [][]byte) [][]byte {
	t.Helper()
	var got [][]byte
	for {
		n, err := s.Read(frames)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames[:n] {
			got = append(got, bytes.Clone(f))
		}
		if n < len(frames) {
			return got
		}
	}
}

// TestStreamSplit: the stream cut at every byte position, the two parts
// written apart: the frames before the cut come at the first reads, the
// one it splits is reassembled at the next, and nothing else is moved
// than partial frames. Reads ask for fewer frames than were written, so
// whole frames are also left over between reads.
func TestStreamSplit(t *testing.T) {
	a, p := streamPair(t)
	s := newStream(t, -1, a, false, 8)
	in := [][]byte{testFrame(1, 14), testFrame(2, 61), testFrame(3, 1514), testFrame(4, 15)}
	w := wire(in...)
	var moved uint64
	for cut := 1; cut < len(w); cut++ {
		frames := make([][]byte, 1+cut%3)
		p.write(t, w[:cut])
		got := readAll(t, s, frames)
		whole, rest := parseWire(w[:cut])
		sameFrames(t, fmt.Sprintf("cut at %d, first part", cut), got, whole)
		if len(whole) > 0 {
			// A tail already at the start of the buffer stays put.
			moved += uint64(len(rest))
		}
		p.write(t, w[cut:])
		got = append(got, readAll(t, s, frames)...)
		sameFrames(t, fmt.Sprintf("cut at %d", cut), got, in)
	}
	if s.Stats.BadLength != 0 || s.Connected() == false {
		t.Fatalf("client reset: %+v", s.Stats)
	}
	if s.Stats.Moved != moved {
		t.Fatalf("%d bytes moved, want %d (the partial tails)", s.Stats.Moved, moved)
	}
}

// TestStreamSlowPeer: a peer writing a long stream in small random pieces
// with pauses: every frame arrives whole, in order, through the loop.
func TestStreamSlowPeer(t *testing.T) {
	a, p := streamPair(t)
	s := newStream(t, -1, a, false, 8)
	l := newTestLoop(t)
	if err := s.Watch(l); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var in [][]byte
	for i := 0; i < 300; i++ {
		n := StreamMinFrame + r.IntN(2000)
		if i%50 == 7 {
			n = MaxFrame
		}
		in = append(in, testFrame(i, n))
	}
	w := wire(in...)
	done := make(chan error, 1)
	go func() {
		for b := w; len(b) > 0; {
			k := min(len(b), 1+r.IntN(4000))
			if err := writeAll(p.fd, b[:k]); err != nil {
				done <- err
				return
			}
			b = b[k:]
			time.Sleep(time.Duration(r.IntN(100)) * time.Microsecond)
		}
		done <- nil
	}()
	l.waitFrames(t, s, len(in), 20*time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sameFrames(t, "slow peer", l.in, in)
}

// TestStreamMaxFrame: a frame of MaxFrame bytes crosses both ways.
func TestStreamMaxFrame(t *testing.T) {
	a, p := streamPair(t)
	s := newStream(t, -1, a, false, 4)
	l := newTestLoop(t)
	if err := s.Watch(l); err != nil {
		t.Fatal(err)
	}
	big := testFrame(1, MaxFrame)
	go writeAll(p.fd, wire(big))
	l.waitFrames(t, s, 1, 5*time.Second)
	sameFrames(t, "from the peer", l.in, [][]byte{big})

	big2 := testFrame(2, MaxFrame)
	queue(t, s, big2)
	got := make(chan [][]byte, 1)
	go func() { got <- p.readFrames(t, 1) }()
	s.Flush()
	for end := time.Now().Add(5 * time.Second); s.Pending() > 0 && time.Now().Before(end); {
		l.turn(s, 10*time.Millisecond)
	}
	sameFrames(t, "to the peer", <-got, [][]byte{big2})
}

// TestStreamBadLength: lengths under an Ethernet header or over MaxFrame
// reset the client after the good frames before them (the peer sees end
// of file, Ready reports EventDown); frames queued meanwhile are dropped
// and counted; the listener then takes a new client, which works both
// ways.
func TestStreamBadLength(t *testing.T) {
	lfd, path := listenUnix(t)
	s := newStream(t, lfd, -1, false, 8)
	l := newTestLoop(t)
	if err := s.Watch(l); err != nil {
		t.Fatal(err)
	}
	for i, bad := range []uint32{0, 13, MaxFrame + 1, 70000, 0xffffffff} {
		c := dial(t, path)
		l.waitEvent(t, s, EventUp)
		l.in = nil
		good := testFrame(i, 100)
		c.write(t, append(wire(good), binary.BigEndian.AppendUint32(nil, bad)...))
		c.write(t, make([]byte, 20))
		l.waitEvent(t, s, EventDown)
		sameFrames(t, fmt.Sprintf("length %d", bad), l.in, [][]byte{good})
		c.expectEOF(t)
		c.close()
		if s.Stats.BadLength != uint64(i+1) || s.Connected() {
			t.Fatalf("length %d: stats %+v, connected %v", bad, s.Stats, s.Connected())
		}
		d := s.Stats.DroppedOut
		queue(t, s, testFrame(100, 60), testFrame(101, 60))
		s.Flush()
		if s.Stats.DroppedOut != d+2 {
			t.Fatalf("no client: %d dropped, want 2", s.Stats.DroppedOut-d)
		}
	}
	c := dial(t, path)
	l.waitEvent(t, s, EventUp)
	l.in = nil
	edge := [][]byte{testFrame(1, StreamMinFrame), testFrame(2, MaxFrame)}
	go writeAll(c.fd, wire(edge...))
	l.waitFrames(t, s, 2, 5*time.Second)
	sameFrames(t, "after the resets", l.in, edge)
	queue(t, s, testFrame(3, 1514))
	s.Flush()
	sameFrames(t, "towards the new client", c.readFrames(t, 1), [][]byte{testFrame(3, 1514)})
	if s.Stats.Connects != 6 || s.Stats.Disconnects != 5 {
		t.Fatalf("stats %+v", s.Stats)
	}
}

// TestStreamSecondClient: a connection while a client is connected is
// accepted and closed at once (it sees end of file, no EventUp), and the
// client goes on working both ways.
func TestStreamSecondClient(t *testing.T) {
	lfd, path := listenUnix(t)
	s := newStream(t, lfd, -1, false, 8)
	l := newTestLoop(t)
	if err := s.Watch(l); err != nil {
		t.Fatal(err)
	}
	c1 := dial(t, path)
	l.waitEvent(t, s, EventUp)
	c2 := dial(t, path)
	for end := time.Now().Add(5 * time.Second); s.Stats.Refused == 0 && time.Now().Before(end); {
		ev, err := l.turn(s, 10*time.Millisecond)
		if err != nil || ev&(EventUp|EventDown) != 0 {
			t.Fatalf("second client: events %#x, %v", ev, err)
		}
	}
	if s.Stats.Refused != 1 {
		t.Fatal("second client not refused")
	}
	c2.expectEOF(t)
	f := testFrame(1, 200)
	c1.write(t, wire(f))
	l.waitFrames(t, s, 1, 5*time.Second)
	sameFrames(t, "first client", l.in, [][]byte{f})
	queue(t, s, f)
	s.Flush()
	sameFrames(t, "towards the first client", c1.readFrames(t, 1), [][]byte{f})
}

// TestStreamHangup: a client that writes and goes away at once: its
// frames are read, then EventDown; frames towards nobody are dropped and
// counted; the next client gets EventUp and works.
func TestStreamHangup(t *testing.T) {
	lfd, path := listenUnix(t)
	s := newStream(t, lfd, -1, false, 8)
	l := newTestLoop(t)
	if err := s.Watch(l); err != nil {
		t.Fatal(err)
	}
	c1 := dial(t, path)
	in := [][]byte{testFrame(1, 60), testFrame(2, 1514), testFrame(3, 70)}
	c1.write(t, append(wire(in...), 0, 0)) // and the start of a length
	c1.close()
	ev := l.waitEvent(t, s, EventDown)
	if ev&EventUp == 0 {
		t.Fatalf("events %#x: no EventUp before EventDown", ev)
	}
	sameFrames(t, "before the hang-up", l.in, in)
	queue(t, s, testFrame(4, 60))
	s.Flush()
	if s.Stats.DroppedOut != 1 {
		t.Fatalf("%d dropped, want 1", s.Stats.DroppedOut)
	}
	c2 := dial(t, path)
	l.waitEvent(t, s, EventUp)
	queue(t, s, testFrame(5, 60))
	s.Flush()
	sameFrames(t, "second client", c2.readFrames(t, 1), [][]byte{testFrame(5, 60)})
}

// TestStreamOneOff: with oneOff, and without a listener (--fd), the
// client's hang-up is ErrDone.
func TestStreamOneOff(t *testing.T) {
	t.Run("one-off", func(t *testing.T) {
		lfd, path := listenUnix(t)
		s := newStream(t, lfd, -1, true, 8)
		l := newTestLoop(t)
		if err := s.Watch(l); err != nil {
			t.Fatal(err)
		}
		c := dial(t, path)
		l.waitEvent(t, s, EventUp)
		c.close()
		if err := l.waitErr(t, s); !errors.Is(err, ErrDone) {
			t.Fatalf("Ready: %v, want ErrDone", err)
		}
		if s.Connected() {
			t.Fatal("client still open")
		}
	})
	t.Run("fd", func(t *testing.T) {
		a, p := streamPair(t)
		s := newStream(t, -1, a, false, 8)
		l := newTestLoop(t)
		if err := s.Watch(l); err != nil {
			t.Fatal(err)
		}
		p.close()
		if err := l.waitErr(t, s); !errors.Is(err, ErrDone) {
			t.Fatalf("Ready: %v, want ErrDone", err)
		}
	})
}

// TestStreamBackpressure: with a tiny send buffer and a slow peer, a
// producer that takes its buffers with Reserve (as TCP does) is refused
// slots while the socket does not take the queue, and told when it does
// (EventWritable); every frame then reaches the peer, whole and in order,
// none dropped, though the socket stopped inside frames many times. A
// single frame asked for with Frame while the queue is full and blocked is
// dropped and counted (control frames; the producer of data never loses
// any).
func TestStreamBackpressure(t *testing.T) {
	a, p := streamPair(t)
	if err := unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	s := newStream(t, -1, a, false, 16)
	l := newTestLoop(t)
	if err := s.Watch(l); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []byte
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 3000)
		for {
			n, err := unix.Read(p.fd, buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				done <- err
				return
			}
			mu.Lock()
			got = append(got, buf[:n]...)
			mu.Unlock()
			time.Sleep(50 * time.Microsecond)
		}
	}()
	sizes := []int{9000, MaxFrame, 1514, 30000, 14, 60, 20000, 4000}
	var sent []int // sizes by sequence number
	refusals, writables := 0, 0
	var slot [1][]byte
	for i := 0; i < 320; i++ {
		n := sizes[i%len(sizes)]
		if (i/8)%4 == 3 {
			n = 14 + (i%8)*30 // runs of small frames, several whole per write
		}
		for end := time.Now().Add(10 * time.Second); s.Reserve(slot[:]) == 0; {
			refusals++
			if time.Now().After(end) {
				t.Fatalf("frame %d: no slot for 10 s (blocked %v, pending %d)", i, s.Blocked(), s.Pending())
			}
			ev, err := l.turn(s, 10*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if ev&EventWritable != 0 {
				writables++
			}
		}
		s.Commit(copy(slot[0], testFrame(len(sent), n)))
		sent = append(sent, n)
		if i%8 == 7 {
			s.Flush()
		}
	}
	// A control frame while blocked and full: dropped, counted.
	for s.Reserve(slot[:]) == 1 {
		s.Commit(copy(slot[0], testFrame(len(sent), MaxFrame)))
		sent = append(sent, MaxFrame)
	}
	dropped := 0
	if s.Blocked() {
		b := s.Frame()
		s.Commit(copy(b, []byte("a control frame, dropped")))
		dropped = 1
	}
	for end := time.Now().Add(20 * time.Second); (s.Queued() > 0 || s.Pending() > 0) && time.Now().Before(end); {
		if _, err := l.turn(s, 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if s.Queued() > 0 || s.Pending() > 0 {
		t.Fatalf("%d frames and %d bytes still queued", s.Queued(), s.Pending())
	}
	st := s.Stats
	s.Close() // the peer reads to the end
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	frames, rest := parseWire(got)
	if len(rest) != 0 {
		t.Fatalf("the stream ends inside a frame (%d bytes after the last whole one)", len(rest))
	}
	if len(frames) != len(sent) {
		t.Fatalf("%d frames read, %d sent, stats %+v", len(frames), len(sent), st)
	}
	for i, f := range frames {
		if seq := frameSeq(f); seq != i || !bytes.Equal(f, testFrame(seq, sent[seq])) {
			t.Fatalf("frame %d (seq %d, %d bytes) is not the frame sent %d-th", i, seq, len(f), i)
		}
	}
	if st.Partial == 0 || refusals == 0 || writables == 0 || st.DroppedOut != uint64(dropped) {
		t.Fatalf("short writes %d, refusals %d, writable events %d, drops %d (want %d): %+v",
			st.Partial, refusals, writables, st.DroppedOut, dropped, st)
	}
	t.Logf("%d frames, all received in order; %d short writes, %d refusals, %d writable events, %d control frame dropped",
		len(sent), st.Partial, refusals, writables, dropped)
}

// TestStreamReadExact: with far more than a receive buffer of frames
// queued by the peer, reads of RxBatch (and fewer) frames never stop short
// before the queue is empty: Read returns fewer than asked only when it
// has handed out everything, even when whole frames are left over in the
// buffer and partial frames have to wrap around below the views.
func TestStreamReadExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, want := range []int{RxBatch, 100, 7, 1} {
		t.Run(fmt.Sprint(want), func(t *testing.T) {
			a, p := streamPair(t)
			if err := unix.SetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 128<<20); err != nil {
				t.Skipf("SO_SNDBUFFORCE: %v (needs CAP_NET_ADMIN)", err)
			}
			s := newStream(t, -1, a, false, 4)
			var in [][]byte
			total := 0
			for total < 3*StreamRxBytes {
				var n int
				switch r.IntN(3) {
				case 0:
					n = StreamMinFrame + r.IntN(100)
				case 1:
					n = StreamMinFrame + r.IntN(MaxFrame-StreamMinFrame+1)
				default:
					n = MaxFrame - r.IntN(10)
				}
				in = append(in, testFrame(len(in), n))
				total += n + 4
			}
			w := wire(in...)
			if err := unix.SetNonblock(p.fd, true); err != nil {
				t.Fatal(err)
			}
			if n, err := unix.SendmsgN(p.fd, w, nil, nil, unix.MSG_NOSIGNAL); n != len(w) {
				t.Skipf("the peer queued %d of %d bytes (%v)", n, len(w), err)
			}
			frames := make([][]byte, want)
			i := 0
			for {
				n, err := s.Read(frames)
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range frames[:n] {
					if !bytes.Equal(f, in[i]) {
						t.Fatalf("frame %d differs", i)
					}
					i++
				}
				if n < want {
					break
				}
			}
			if i != len(in) {
				t.Fatalf("Read returned %d frames, fewer than %d asked for, after %d of %d frames", i, want, i, len(in))
			}
			t.Logf("%d frames, %d recvmsg calls, %d bytes moved", len(in), s.Stats.Recvs, s.Stats.Moved)
		})
	}
}

// TestStreamNoAllocs: reading batches of frames and flushing batches
// towards the peer allocate nothing.
func TestStreamNoAllocs(t *testing.T) {
	a, p := streamPair(t)
	s := newStream(t, -1, a, false, 64)
	var in [][]byte
	for i := 0; i < 64; i++ {
		in = append(in, testFrame(i, 60+i*20))
	}
	w := wire(in...)
	back := make([]byte, len(w))
	frames := make([][]byte, RxBatch)
	var bad int
	allocs := testing.AllocsPerRun(50, func() {
		unix.Write(p.fd, w)
		got := 0
		for {
			n, _ := s.Read(frames)
			got += n
			if n < len(frames) {
				break
			}
		}
		if got != len(in) {
			bad++
		}
		for _, f := range in {
			b := s.Frame()
			s.Commit(copy(b, f))
		}
		s.Flush()
		for off := 0; off < len(back); {
			n, err := unix.Read(p.fd, back[off:])
			if err != nil || n == 0 {
				bad++
				break
			}
			off += n
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch", allocs)
	}
	if bad != 0 || !bytes.Equal(back, w) || s.Stats.DroppedOut != 0 {
		t.Fatalf("%d bad rounds, %d dropped", bad, s.Stats.DroppedOut)
	}
}

// fuzzStream is the Stream of the fuzz target, made once per process (its
// receive buffer is 8 MiB) and given a new socketpair for every input.
var fuzzStream *Stream

// FuzzStreamRead: any byte stream, written in any chunking and read with
// any batch size, gives exactly the whole frames a reference parser finds
// before the first bad length or the end, each within bounds, and a bad
// length resets the client; nothing panics.
func FuzzStreamRead(f *testing.F) {
	f.Add(wire(testFrame(1, 14), testFrame(2, 60)), []byte{3}, uint8(0))
	f.Add(wire(testFrame(1, 1514), testFrame(2, 61), testFrame(3, 14)), []byte{0, 200, 7}, uint8(1))
	f.Add(wire(testFrame(1, MaxFrame)), []byte{255, 255}, uint8(127))
	f.Add(wire(testFrame(1, MaxFrame)), []byte{0}, uint8(0)) // the shortest writes
	f.Add([]byte{0, 0, 0, 0}, []byte{}, uint8(5))
	f.Add([]byte{0, 0, 0, 13, 1, 2, 3}, []byte{1}, uint8(5))
	f.Add(append(wire(testFrame(1, 20)), 0, 1, 0, 14), []byte{2, 1}, uint8(2))
	f.Add(append(wire(testFrame(1, 20)), 0xff, 0xff, 0xff, 0xff), []byte{9}, uint8(3))
	f.Add(append(wire(testFrame(1, 20)), 0, 1), []byte{1}, uint8(3))
	f.Fuzz(func(t *testing.T, data, chunks []byte, batch uint8) {
		if fuzzStream == nil {
			fuzzStream = NewStream(-1, -1, false, 1, nil)
		}
		s := fuzzStream
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		s.attach(fds[0])
		pfd := fds[1]
		defer func() {
			if s.conn >= 0 {
				unix.Close(s.conn)
			}
			s.attach(-1)
			unix.Close(pfd)
		}()

		// The reference: whole frames up to the first bad length.
		var ref [][]byte
		bad := false
		for b := data; len(b) >= 4; {
			l := binary.BigEndian.Uint32(b)
			if l < StreamMinFrame || l > MaxFrame {
				bad = true
				break
			}
			if uint64(len(b)) < 4+uint64(l) {
				break
			}
			ref = append(ref, b[4:4+l])
			b = b[4+l:]
		}
		badBefore := s.Stats.BadLength

		frames := make([][]byte, 1+int(batch)%RxBatch)
		got := 0
		check := func() {
			for {
				n, err := s.Read(frames)
				if err != nil || n > len(frames) {
					t.Fatalf("Read: %d, %v", n, err)
				}
				for _, f := range frames[:n] {
					if len(f) < StreamMinFrame || len(f) > MaxFrame {
						t.Fatalf("frame of %d bytes", len(f))
					}
					if got >= len(ref) || !bytes.Equal(f, ref[got]) {
						t.Fatalf("frame %d (%d bytes) is not the reference's", got, len(f))
					}
					got++
				}
				if n < len(frames) {
					return
				}
			}
		}
		for off, i, stuck := 0, 0, 0; off < len(data) && !s.broken; i++ {
			k := len(data) - off
			if len(chunks) > 0 {
				// At most about 512 writes per input, so that big
				// inputs stay fast; small ones go byte by byte if
				// chunks say so.
				c := int(chunks[i%len(chunks)])
				k = min(k, max(1+c*c, len(data)/512))
			}
			n, err := unix.SendmsgN(pfd, data[off:off+k], nil, nil, unix.MSG_NOSIGNAL)
			if err != nil && err != unix.EAGAIN {
				break // EPIPE: the stream reset the client
			}
			if n > 0 {
				off, stuck = off+n, 0
			} else if stuck++; stuck > 100 {
				// Read drains the socket whenever it is full: a
				// writer that cannot go on means Read stopped short.
				t.Fatalf("the peer cannot write at %d of %d bytes", off, len(data))
			}
			check()
		}
		unix.Close(pfd)
		pfd = -1
		check()
		if got != len(ref) {
			t.Fatalf("%d frames, the reference has %d", got, len(ref))
		}
		if bad != (s.Stats.BadLength == badBefore+1) || !s.broken {
			t.Fatalf("bad length %v, counted %d, broken %v", bad, s.Stats.BadLength-badBefore, s.broken)
		}
	})
}

// TestStreamWritableAfterFlush: a producer refused slots is told it may go
// on (EventWritable) also when the queue drains through a later Flush (the
// engine's end of turn) rather than at EPOLLOUT, which is what wakes TCP
// flows that stopped peeking; otherwise they would wait for ever.
func TestStreamWritableAfterFlush(t *testing.T) {
	a, p := streamPair(t)
	unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	s := newStream(t, -1, a, false, 4)
	l := newTestLoop(t)
	if err := s.Watch(l); err != nil {
		t.Fatal(err)
	}
	var slot [1][]byte
	for i := 0; s.Reserve(slot[:]) == 1 || !s.Blocked(); i++ {
		if i > 1000 {
			t.Fatal("never refused a slot")
		}
		if s.Reserve(slot[:]) == 1 {
			s.Commit(copy(slot[0], testFrame(i, 20000)))
		}
		s.Flush()
	}
	// The peer reads everything; the queue drains through Flush alone.
	go func() {
		buf := make([]byte, 1<<16)
		for {
			if n, err := unix.Read(p.fd, buf); err != nil || n == 0 {
				return
			}
		}
	}()
	for end := time.Now().Add(5 * time.Second); s.Blocked() && time.Now().Before(end); time.Sleep(time.Millisecond) {
		s.Flush()
	}
	if s.Blocked() {
		t.Fatal("the queue did not drain")
	}
	var seen Event
	for end := time.Now().Add(2 * time.Second); seen&EventWritable == 0 && time.Now().Before(end); {
		ev, err := l.turn(s, 20*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		seen |= ev
	}
	if seen&EventWritable == 0 {
		t.Fatal("no EventWritable after the queue drained through Flush")
	}
}
