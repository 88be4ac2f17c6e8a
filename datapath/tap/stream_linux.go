// passt mode's guest back end: qemu's stream socket (-netdev stream on
// passt's listening socket, or the connected socket handed over with --fd),
// where every frame is a 4-byte big-endian length followed by the Ethernet
// frame, both directions. Frames from qemu are read many per recvmsg and
// handed out in place; frames towards it are written one sendmsg per batch.

package tap

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"gopasst/batch"
	"gopasst/datapath/logging"
	"gopasst/datapath/sys"
	"gopasst/isolation/allow"
)

// Theory of operation
//
// Connection. The Stream has a listening socket (index 0 in the loop) and
// at most one client, qemu (index 1). The listener's first connection
// becomes the client (EventUp); one that arrives while a client is
// connected is accepted and closed at once, as the C original does, so
// that a second qemu sees end of file rather than hanging. When the client
// hangs up, errs, or sends a length we refuse, it is closed and Ready
// reports EventDown, and the listener takes the next one; with oneOff (or
// without a listener: --fd, where nothing could connect again) Ready
// returns ErrDone instead, the clean end of the run.
//
// Bounds. A length from qemu must lie in [StreamMinFrame, MaxFrame]: at
// least an Ethernet header, as the C original asks, and at most MaxFrame
// (65535 + 14), the largest frame any of our back ends carries. The C
// original refuses over 65535 (L2_MAX_LEN_PASST, "somewhat arbitrarily");
// we take the 14 bytes more so that a guest whose MTU is 65535 (ETH_MAX_MTU,
// which virtio-net allows) is served, and every view still fits the
// Backend contract. Towards qemu our frames are at most MaxFrame bytes
// (Frame's buffer); qemu itself takes up to NET_BUFSIZE (4096 + 65536). Any
// other length means the stream is out of step for good (there is no
// resynchronisation in this framing): the client is reset.
//
// Receive buffer. rx holds what recvmsg brought: [start, end) is not handed
// out yet, whole frames first, then at most one partial frame. A frame that
// lies whole in rx is handed out as a view in place, never copied. Only the
// partial tail moves: when a Read has handed out nothing yet (no view of it
// is live), the tail is moved to the start of rx (the C original's memmove)
// and recvmsg fills everything after it, so one call brings in up to 8 MiB,
// many frames. Views stay valid until the next Read, so within one Read
// nothing is moved over a view: when the partial frame cannot be completed
// before the end of rx, its tail moves to the start of rx only if that lies
// below the views (this Read's first view starts at lo), and the reads go
// on into [tail, lo). rx is StreamRxBytes = (RxBatch+2) frames of the
// largest size, which is what makes the contract exact: with at most
// RxBatch views per call, the two regions always hold a whole batch, so
// Read never stops short of len(frames) while qemu has frames queued (a
// region that runs out leaves less than one largest frame unused, the two
// together lose less than two; see StreamRxBytes).
//
// Bad lengths. Read finds them; it counts them, stops handing out frames
// (those before it in this call are returned), marks the client broken and
// shuts the socket down (shutdown(2), both ways): qemu sees end of file at
// once, and the loop reports a hang-up on our side at the next wait, so
// Ready closes the client and reports EventDown (or ErrDone) then, with
// one log line. Reads of a broken client return no frames. End of file and
// errors met by Read or Flush take the same path.
//
// Send queue, the partial-write rule, and backpressure. Frames towards qemu
// sit in a batch.Frames pool with 4 bytes of headroom each, where Flush
// writes the length, so the frame never moves; Flush writes the queue in
// one sendmsg, one iovec per frame (headroom and frame), IOV_MAX iovecs at
// a time. The stream must never carry a torn frame: if the socket takes
// only part of a frame, its unsent remainder is copied into pend (MaxFrame+4
// bytes, preallocated) and sent first, before any other byte. A stream
// socket is a reliable pipe whose buffer (net.core.wmem_max: a few large
// frames) fills whenever qemu reads slower than we produce, so the frames
// it does not take are not dropped: they stay queued, from head on, and
// EPOLLOUT is subscribed. Meanwhile Reserve hands out only the slots left
// after the queue's end, possibly none: TCP then stops peeking (its data
// stays in the host socket, unsent, nothing to retransmit later) and, when
// EPOLLOUT has drained the queue, Ready reports EventWritable, on which the
// engine lets the protocols go on. Frame, for single frames (ACKs, control
// segments, services), gives a scratch buffer when the queue is blocked and
// full, and the frame committed there is dropped and counted, as a full tap
// queue drops: those are few and recovered by their protocols. This is the
// C original's rule too: frames the socket did not take are not counted as
// sent (tcp_revert_seq), rather than lost.
// With no client (or a broken one), Flush drops the queue, counted.

// ErrDone is what Ready returns when the client of a one-off Stream (or of
// one without a listener: a socket handed over with --fd) goes away: the
// end of the run, not a failure. The engine ends its run with status 0 on
// it (errors.Is), as the C original exits with 0 when its one-off client
// disconnects.
var ErrDone = errors.New("qemu disconnected, one-off: done")

const (
	// StreamMinFrame is the shortest frame taken from qemu: an Ethernet
	// header, as in the C original.
	StreamMinFrame = 14
	// streamHdr is the length prefix of every frame on the stream.
	streamHdr = 4
	// streamWire is the most bytes one frame takes on the stream.
	streamWire = MaxFrame + streamHdr
	// StreamRxBytes is the size of the receive buffer: RxBatch+2 frames of
	// the largest size (8.1 MiB, about the C original's 8 MiB). It is
	// what keeps Read from stopping short for want of room. Say a Read
	// hands out k leftover frames in [lo, q) (q-lo <= k*W, W =
	// streamWire), then reads after q until the partial frame at p cannot
	// end below L = StreamRxBytes: p > L-W, so more than (L-q)/W - 1
	// frames lie in [q, p). Then it reads in [0, lo) until stuck again at
	// p2 > lo-W: more than lo/W - 1 frames. In all it has handed out more
	// than k + (L-q+lo)/W - 2 >= L/W - 2 = RxBatch frames before it could
	// be stuck twice, and it never wants more than RxBatch. With no
	// leftovers the first region is all of rx, and the bound holds alike.
	StreamRxBytes = (RxBatch + 2) * streamWire
	// iovMax is the most iovecs one sendmsg takes (UIO_MAXIOV).
	iovMax = 1024
	// streamListenIdx and streamConnIdx are the Stream's descriptor
	// indexes for Watcher and Ready.
	streamListenIdx = 0
	streamConnIdx   = 1
	// streamEvents is what the client is watched for, besides EPOLLOUT
	// while a remainder is pending.
	streamEvents = unix.EPOLLIN | unix.EPOLLRDHUP
	// streamSendFlags: never block, and no SIGPIPE when qemu is gone (the
	// write fails with EPIPE instead, and the client is reset).
	streamSendFlags = unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL
	// whyBadLength is breakConn's reason for a bad length, which down
	// logs with the length itself.
	whyBadLength = "bad length"
)

// Stream is passt mode's guest back end: qemu's stream socket. See the
// theory of operation above. Not safe for concurrent use: everything runs
// on the loop's thread.
type Stream struct {
	listen int  // listening socket, -1 without one (--fd)
	conn   int  // the client, -1 while none is connected
	oneOff bool // a hang-up ends the run (ErrDone)
	w      Watcher
	pcap   Pcap

	// Receiving.
	rx         []byte // StreamRxBytes: [start, end) not handed out yet
	start, end int
	rxIov      unix.Iovec
	rxMsg      unix.Msghdr
	broken     bool   // the client failed or sent a bad length: shut down, Ready closes it
	why        string // what broke it, for Ready's log line
	badLen     uint32 // the bad length, if that was it

	// Sending.
	out        *batch.Frames
	iov        []unix.Iovec // min(queue length, iovMax) entries
	msg        unix.Msghdr
	pend       []byte // unsent remainder of the frame a short write stopped in: pend[pendOff:pendLen]
	pendOff    int
	pendLen    int
	pendFrame  int  // that frame's length, counted in BytesOut once it is all sent
	outWatched bool // EPOLLOUT subscribed on the client
	head       int  // queued frames before head are written (or in pend); the rest wait
	blocked    bool // the socket stopped taking frames: queue kept, EPOLLOUT awaited
	refused    bool // Reserve gave fewer slots than asked while blocked: EventWritable due
	scratch    []byte
	dropNext   bool // the frame Frame handed out is the scratch: its Commit drops it

	sa    unix.RawSockaddrAny // accept4's peer address (unused: AF_UNIX)
	Stats StreamStats
}

// StreamStats counts what crossed the stream. Bytes are Ethernet frame
// bytes, without the length prefixes.
type StreamStats struct {
	FramesIn, BytesIn               uint64
	FramesOut, BytesOut, DroppedOut uint64
	BadLength                       uint64 // clients reset for a bad length
	Recvs                           uint64 // recvmsg calls that brought data
	Moved                           uint64 // bytes of partial frames moved to the buffer start
	Partial                         uint64 // writes that stopped inside a frame (its remainder kept)
	Connects, Refused               uint64 // clients accepted; clients closed at once (one was connected)
	Disconnects                     uint64 // clients closed: hang-up, error, bad length
}

var _ Backend = (*Stream)(nil)

// NewStream makes the stream back end. Both descriptors must be
// non-blocking stream sockets of AF_UNIX; the Stream owns them from now on.
// It allocates everything it will use (the receive buffer, the send pool,
// the pending buffer) here.
//
// listenFD: the listening socket (passt's -s PATH, or /tmp/passt_N.socket,
// opened by the caller before the sandbox), -1 when a connected socket was
// handed over (--fd); connFD: a connected client, -1 until one connects
// through listenFD; oneOff: the first client's hang-up ends the run
// (ErrDone; also implied when listenFD is -1); queueLen: frames queued
// towards qemu before a flush (at least 1); p: capture, or nil. Returns
// the Stream, to be watched (Watch) before use.
func NewStream(listenFD, connFD int, oneOff bool, queueLen int, p Pcap) *Stream {
	s := &Stream{
		listen:  listenFD,
		conn:    -1,
		oneOff:  oneOff,
		pcap:    p,
		rx:      make([]byte, StreamRxBytes),
		out:     batch.NewFrames(queueLen, MaxFrame, streamHdr),
		iov:     make([]unix.Iovec, min(queueLen, iovMax)),
		pend:    make([]byte, streamWire),
		scratch: make([]byte, MaxFrame),
	}
	s.rxMsg.Iov = &s.rxIov
	s.rxMsg.SetIovlen(1)
	if connFD >= 0 {
		s.attach(connFD)
	}
	return s
}

// attach makes fd the client, with a fresh receive and send state. It does
// not watch it: see watchConn.
func (s *Stream) attach(fd int) {
	s.conn = fd
	s.start, s.end = 0, 0
	s.broken, s.why, s.badLen = false, "", 0
	s.pendOff, s.pendLen, s.pendFrame = 0, 0, 0
	s.outWatched = false
	s.blocked, s.refused = false, false
}

// Connected reports whether a client is connected (broken or not).
func (s *Stream) Connected() bool { return s.conn >= 0 }

// Watch implements Backend: the listener as index 0 and, if one is
// connected already, the client as index 1. w is kept to watch later
// clients.
func (s *Stream) Watch(w Watcher) error {
	s.w = w
	if s.listen >= 0 {
		if err := w.Watch(s.listen, unix.EPOLLIN, streamListenIdx); err != nil {
			return fmt.Errorf("qemu socket listener: %w", err)
		}
	}
	if s.conn >= 0 {
		if err := s.watchConn(false); err != nil {
			return err
		}
	}
	return nil
}

// watchConn (re)registers the client, for input and hang-up and, with out,
// for EPOLLOUT. Without a Watcher (a Stream not watched yet) it does
// nothing. Returns the Watcher's error, wrapped.
func (s *Stream) watchConn(out bool) error {
	if s.w == nil {
		return nil
	}
	ev := uint32(streamEvents)
	if out {
		ev |= unix.EPOLLOUT
	}
	if err := s.w.Watch(s.conn, ev, streamConnIdx); err != nil {
		return fmt.Errorf("qemu socket: %w", err)
	}
	s.outWatched = out
	return nil
}

// Ready implements Backend.
//
// On the listener (idx 0): it accepts a connection. With no client it
// becomes the client (EventUp); otherwise it is closed at once (no
// event).
//
// On the client (idx 1): EPOLLOUT sends the pending remainder; EPOLLIN
// reports EventFrames (data before a hang-up is read first: Read meets the
// end of file and marks the client broken); a broken client, or a hang-up
// or error without input, is closed: EventDown, or ErrDone with oneOff or
// without a listener. err is otherwise only an epoll failure.
func (s *Stream) Ready(idx uint32, events uint32) (Event, error) {
	switch idx {
	case streamListenIdx:
		return s.accept()
	case streamConnIdx:
		if s.conn < 0 {
			return 0, nil // an event of a client closed earlier in the same wait
		}
		var ev Event
		if !s.broken && events&unix.EPOLLOUT != 0 {
			if s.blocked {
				s.drain()
			}
			if !s.blocked && s.refused {
				// Drained, here or by a Flush since (which keeps
				// EPOLLOUT watched for this): producers go on.
				s.refused = false
				ev = EventWritable
				if s.outWatched {
					if err := s.watchConn(false); err != nil {
						logging.Debugf("%v", err)
					}
				}
			}
		}
		switch {
		case s.broken:
			return s.down()
		case events&unix.EPOLLIN != 0:
			return ev | EventFrames, nil
		case ev != 0:
			return ev, nil
		case events&(unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0:
			s.why = "hang-up"
			return s.down()
		}
	}
	return 0, nil
}

var _ = allow.Syscall(allow.Passt, "close", "tap.Stream: closing qemu's connection when it went away or broke, and a second one refused at once (Stream.accept, down)")

// AcceptNext takes the next connection from the listening socket listen
// (non-blocking, close-on-exec), sa receiving the peer's address, for the
// passt-mode back ends (Stream, and vhost-user's). Returns its descriptor,
// or -1 when there is none to take: EAGAIN (another wake-up took it),
// ECONNABORTED (it went before we got it), or EMFILE and the like, where
// there is nothing to do but try again at the next event, as the C
// original does (those are logged with -d, as what of the socket).
func AcceptNext(listen int, sa *unix.RawSockaddrAny, what string) int {
	fd, e := sys.Accept4(listen, sa)
	if e != 0 {
		if e != unix.EAGAIN && e != unix.ECONNABORTED {
			logging.Debugf("%s: accept4: %v", what, e)
		}
		return -1
	}
	return fd
}

// accept takes a connection from the listener: the client if none is
// connected, else closed at once with one log line. Returns EventUp for a
// new client, or an error if it cannot be watched.
func (s *Stream) accept() (Event, error) {
	if s.listen < 0 {
		return 0, nil
	}
	fd := AcceptNext(s.listen, &s.sa, "qemu socket")
	if fd < 0 {
		return 0, nil
	}
	if s.conn >= 0 {
		pid := peerPID(fd)
		unix.Close(fd)
		s.Stats.Refused++
		logging.Infof("qemu: refused a connection from PID %d, one is connected already", pid)
		return 0, nil
	}
	growBuffers(fd)
	s.attach(fd)
	if err := s.watchConn(false); err != nil {
		unix.Close(fd)
		s.conn = -1
		return 0, err
	}
	s.Stats.Connects++
	logging.Infof("qemu connected (PID %d)", peerPID(fd))
	return EventUp, nil
}

var _ = allow.Syscall(allow.Passt, "getsockopt", "tap.Stream: SO_PEERCRED of a qemu connecting, for the log (peerPID)")

// peerPID returns the process ID of the peer of AF_UNIX socket fd
// (SO_PEERCRED), or 0 if the kernel does not tell.
func peerPID(fd int) int32 {
	uc, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0
	}
	return uc.Pid
}

var _ = allow.Syscall(allow.Passt, "setsockopt", "tap.Stream: SO_SNDBUF, SO_RCVBUF of qemu's connection (growBuffers)")

// growBuffers asks for the largest socket buffers the system allows
// (net.core.wmem_max, rmem_max cap the value) on accepted client fd, as the
// C original does: fewer short writes towards qemu, more frames per read.
// Best effort: a refusal leaves the defaults.
func growBuffers(fd int) {
	const most = 1<<31 - 1
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, most)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, most)
}

var _ = allow.Syscall(allow.Passt, "shutdown", "tap.Stream: resetting qemu's connection after a bad frame length or a failed read or write (breakConn)")

// breakConn marks the client broken and shuts its socket down both ways:
// qemu sees end of file at once, and the loop reports a hang-up on our
// side at the next wait, where Ready closes it. It does not close the
// socket itself: a closed descriptor leaves the loop without an event, and
// EventDown would never be reported.
//
// why: what happened, for Ready's log line.
func (s *Stream) breakConn(why string) {
	if s.broken {
		return
	}
	s.broken, s.why = true, why
	unix.Shutdown(s.conn, unix.SHUT_RDWR)
}

// down closes the client, with one log line, and forgets its state: the
// pending remainder is dropped (counted), frames queued towards it are
// dropped at the next Flush. Returns EventDown, or ErrDone with oneOff or
// without a listener.
func (s *Stream) down() (Event, error) {
	if s.w != nil {
		// Before close: a descriptor that is also open elsewhere (a
		// --fd socket whose opener kept a copy) would stay in epoll.
		s.w.Unwatch(s.conn)
	}
	unix.Close(s.conn)
	if s.pendLen > 0 {
		s.Stats.DroppedOut++
	}
	s.Stats.DroppedOut += uint64(s.out.Len() - s.head)
	s.out.Reset()
	s.head = 0
	why := s.why
	if why == whyBadLength {
		logging.Warnf("qemu: bad frame length %d (must be %d to %d), connection reset", s.badLen, StreamMinFrame, MaxFrame)
	} else {
		logging.Infof("qemu disconnected (%s)", why)
	}
	s.attach(-1)
	s.Stats.Disconnects++
	if s.oneOff || s.listen < 0 {
		return 0, ErrDone
	}
	return EventDown, nil
}

// Close implements Backend: it closes the client and the listener.
// Returns the error of the first close that failed.
func (s *Stream) Close() error {
	var err error
	if s.conn >= 0 {
		err = unix.Close(s.conn)
		s.attach(-1)
	}
	if s.listen >= 0 {
		if e := unix.Close(s.listen); err == nil {
			err = e
		}
		s.listen = -1
	}
	return err
}

// Read implements Backend: it hands out the whole frames in the receive
// buffer, reading more from the client (one recvmsg brings as many bytes
// as are queued and fit) until len(frames) (at most RxBatch) are handed
// out or the socket has no more. Each view is an Ethernet frame of
// StreamMinFrame to MaxFrame bytes in the Stream's buffer, valid until the
// next Read or Close. A bad length resets the client (see the theory of
// operation): the frames before it are returned, none after. End of file
// and read errors mark the client broken the same way; Ready then reports
// EventDown. err is always nil: a client's end is not the datapath's.
func (s *Stream) Read(frames [][]byte) (int, error) {
	if s.conn < 0 || s.broken {
		return 0, nil
	}
	want := min(len(frames), RxBatch)
	n := 0
	lo := s.start      // where this call's first view starts
	limit := len(s.rx) // reads go below this
	wrapped := false   // reads went back to the start of rx below lo
	for {
		for n < want && s.end-s.start >= streamHdr {
			l := binary.BigEndian.Uint32(s.rx[s.start:])
			if l < StreamMinFrame || l > MaxFrame {
				s.Stats.BadLength++
				s.badLen = l
				s.breakConn(whyBadLength)
				return n, nil
			}
			e := s.start + streamHdr + int(l)
			if e > s.end {
				break
			}
			f := s.rx[s.start+streamHdr : e : e]
			frames[n] = f
			n++
			s.start = e
			s.Stats.FramesIn++
			s.Stats.BytesIn += uint64(l)
			if s.pcap != nil {
				s.pcap.Write(f)
			}
		}
		if n == want {
			return n, nil
		}
		// [start, end) is one partial frame, or nothing: read more.
		need := streamHdr
		if s.end-s.start >= streamHdr {
			need += int(binary.BigEndian.Uint32(s.rx[s.start:]))
		}
		switch {
		case n == 0:
			// No view of this call is live: the tail goes to the
			// start, and the whole buffer is free after it.
			s.moveTail()
			lo, limit, wrapped = 0, len(s.rx), false
		case s.start+need > limit:
			// The frame cannot end below limit, and views live in
			// [lo, start): continue below lo, if it holds the frame.
			// The size of rx makes both unreachable (StreamRxBytes).
			if wrapped || need > lo {
				return n, nil
			}
			s.moveTail()
			limit, wrapped = lo, true
		}
		if !s.recv(limit) {
			return n, nil
		}
	}
}

// moveTail moves the partial frame [start, end) to the start of rx (at
// most streamWire-1 bytes: never a whole frame).
func (s *Stream) moveTail() {
	if s.start == 0 {
		return
	}
	t := copy(s.rx, s.rx[s.start:s.end])
	s.Stats.Moved += uint64(t)
	s.start, s.end = 0, t
}

// recv reads what the client has queued into rx[end:limit], one recvmsg.
// Returns whether bytes arrived; false also for end of file and errors,
// which break the client.
//
// Preconditions: end < limit.
func (s *Stream) recv(limit int) bool {
	s.rxIov.Base = &s.rx[s.end]
	s.rxIov.SetLen(limit - s.end)
	r, e := sys.Recvmsg(s.conn, &s.rxMsg, unix.MSG_DONTWAIT)
	switch {
	case e == unix.EAGAIN:
		return false
	case e != 0:
		s.breakConn("read error")
		return false
	case r == 0:
		s.breakConn("end of file")
		return false
	}
	s.end += r
	s.Stats.Recvs++
	return true
}

// Offloads implements Out: none. The stream carries bare frames, no
// virtio-net header, so every frame is complete.
func (s *Stream) Offloads() Offloads { return Offloads{} }

// CommitOffload implements Out as Commit, ignoring h: with Offloads zero a
// producer never calls it, and the frame must be complete anyway (qemu
// gets no header to say otherwise).
func (s *Stream) CommitOffload(n int, h *VnetHdr) { s.Commit(n) }

// Frame implements Out: the next free buffer of the queue, MaxFrame bytes,
// after flushing the queue if it is full. If the socket keeps the queue
// full (blocked), it is a scratch buffer whose frame Commit drops.
func (s *Stream) Frame() []byte {
	s.dropNext = false
	if s.out.Full() {
		s.Flush()
	}
	if s.out.Full() {
		s.dropNext = true
		return s.scratch
	}
	return s.out.Next()[:MaxFrame:MaxFrame]
}

// Reserve implements Out: at most the slots left after the queue's end;
// fewer than asked (none at all) while the socket does not take what is
// queued, and then EventWritable follows once it has (see the theory of
// operation).
func (s *Stream) Reserve(bufs [][]byte) int {
	s.dropNext = false
	if s.out.Cap()-s.out.Len() < len(bufs) {
		s.Flush()
	}
	n := min(len(bufs), s.out.Cap()-s.out.Len())
	if n < len(bufs) && s.blocked {
		s.refused = true
	}
	for i := 0; i < n; i++ {
		bufs[i] = s.out.Slot(s.out.Len() + i)[:MaxFrame:MaxFrame]
	}
	return n
}

// Commit implements Out: the next uncommitted buffer's first n bytes are
// queued; the length prefix is written at Flush. A frame in the scratch
// buffer (Frame while blocked) is dropped and counted.
//
// Preconditions: 0 < n <= MaxFrame.
func (s *Stream) Commit(n int) {
	if s.dropNext {
		s.dropNext = false
		s.Stats.DroppedOut++
		return
	}
	s.out.Commit(n)
}

// Queued returns how many frames wait for Flush.
func (s *Stream) Queued() int { return s.out.Len() - s.head }

// Pending returns the bytes of a partially written frame still to send
// (0: the stream is at a frame boundary).
func (s *Stream) Pending() int { return s.pendLen - s.pendOff }

// Blocked reports whether the socket keeps frames queued (EPOLLOUT awaited).
func (s *Stream) Blocked() bool { return s.blocked }

// Flush implements Out: it writes the queued frames, after their lengths,
// in one sendmsg per iovMax frames, a pending remainder first. What the
// socket does not take stays queued (blocked, EPOLLOUT subscribed) for the
// next Flush or EPOLLOUT; nothing is dropped, but with no client, or a
// broken one, where the queue is dropped and counted.
func (s *Stream) Flush() {
	if s.out.Len() == 0 && s.pendLen == 0 {
		return
	}
	if s.conn < 0 || s.broken {
		s.Stats.DroppedOut += uint64(s.out.Len() - s.head)
		s.out.Reset()
		s.head = 0
		return
	}
	s.drain()
}

// drain writes what is pending and queued, as far as the socket takes it,
// and updates blocked and the EPOLLOUT subscription.
func (s *Stream) drain() {
	if s.pendLen > 0 && !s.sendPending() {
		s.block()
		return
	}
	if s.head < s.out.Len() {
		s.head = s.sendQueue(s.head, s.out.Len())
	}
	if s.broken {
		return
	}
	if s.head < s.out.Len() || s.pendLen > 0 {
		s.block()
		return
	}
	s.out.Reset()
	s.head = 0
	s.blocked = false
	// A producer that was refused slots must hear that it may go on,
	// and only Ready can tell it: EPOLLOUT stays watched until then (the
	// socket being writable, it comes at the next wait).
	if s.outWatched && !s.refused {
		if err := s.watchConn(false); err != nil {
			logging.Debugf("%v", err)
		}
	}
}

// block records that the socket stopped taking frames, and subscribes
// EPOLLOUT.
func (s *Stream) block() {
	s.blocked = true
	if !s.outWatched {
		if err := s.watchConn(true); err != nil {
			logging.Debugf("%v", err)
		}
	}
}

// sendQueue writes queued frames from to q-1, iovMax per sendmsg, and
// stops where the socket stops taking them: the remainder of a frame it
// took part of goes to pend. Returns the index of the first frame not
// started (q when all went).
//
// Preconditions: a client, not broken, nothing pending.
func (s *Stream) sendQueue(from, q int) int {
	for i := from; i < q; {
		k := min(q-i, len(s.iov))
		for j := 0; j < k; j++ {
			f := s.out.WithHeadroom(i + j)
			binary.BigEndian.PutUint32(f, uint32(len(f)-streamHdr))
			s.iov[j].Base = &f[0]
			s.iov[j].SetLen(len(f))
		}
		s.msg.Iov = &s.iov[0]
		s.msg.SetIovlen(k)
		r, e := sys.Sendmsg(s.conn, &s.msg, streamSendFlags)
		if e != 0 {
			if e != unix.EAGAIN {
				s.breakConn("write error")
			}
			return i
		}
		j := 0
		for ; j < k && r >= int(s.iov[j].Len); j++ {
			r -= int(s.iov[j].Len)
			s.sent(i+j, true)
		}
		if j < k {
			if r == 0 {
				return i + j
			}
			// The socket stopped inside frame i+j: what it did not
			// take goes first next time, before anything else.
			f := s.out.WithHeadroom(i + j)
			s.pendOff, s.pendLen = 0, copy(s.pend, f[r:])
			s.pendFrame = len(f) - streamHdr
			s.Stats.Partial++
			s.sent(i+j, false)
			return i + j + 1
		}
		i += k
	}
	return q
}

// sent records queued frame i as written (whole) or started (its
// remainder pending): capture, and the counters if whole.
func (s *Stream) sent(i int, whole bool) {
	f := s.out.Frame(i)
	if s.pcap != nil {
		s.pcap.Write(f)
	}
	if whole {
		s.Stats.FramesOut++
		s.Stats.BytesOut += uint64(len(f))
	}
}

// sendPending writes the remainder of the partially written frame.
// Returns whether it is all gone; a write error breaks the client.
func (s *Stream) sendPending() bool {
	s.iov[0].Base = &s.pend[s.pendOff]
	s.iov[0].SetLen(s.pendLen - s.pendOff)
	s.msg.Iov = &s.iov[0]
	s.msg.SetIovlen(1)
	r, e := sys.Sendmsg(s.conn, &s.msg, streamSendFlags)
	if e != 0 {
		if e != unix.EAGAIN {
			s.breakConn("write error")
		}
		return false
	}
	s.pendOff += r
	if s.pendOff < s.pendLen {
		return false
	}
	s.Stats.FramesOut++
	s.Stats.BytesOut += uint64(s.pendFrame)
	s.pendOff, s.pendLen, s.pendFrame = 0, 0, 0
	return true
}
