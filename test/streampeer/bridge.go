// bridge.go: peer mode's two directions between the tap device and passt's
// socket (see the theory of operation in main.go).

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	// tapBatch is the most frames one tap read round gathers before they
	// go to the socket together.
	tapBatch = 256
	// tapBufLen is the tap-to-socket buffer: room for tapBatch frames of
	// a small size, or 31 of the largest.
	tapBufLen = 2 << 20
	// sockBufLen is the socket-to-tap buffer: one read takes up to this
	// much of what passt has queued (passt itself writes up to about 8 MiB
	// per sendmsg).
	sockBufLen = 4 << 20
)

// errBadLength is nextFrame's error for a length prefix outside
// [minFrame, maxFrame]: the stream is out of step for good.
var errBadLength = errors.New("bad frame length")

// nextFrame returns the first frame of b, which starts with a length
// prefix, and the number of bytes it takes on the stream (prefix
// included); n is 0 if b does not hold the whole frame yet. A length
// outside [minFrame, maxFrame] is an error (errBadLength, with the
// length), found as soon as the prefix is complete.
func nextFrame(b []byte) (frame []byte, n int, err error) {
	if len(b) < hdrLen {
		return nil, 0, nil
	}
	l := binary.BigEndian.Uint32(b)
	if l < minFrame || l > maxFrame {
		return nil, 0, fmt.Errorf("%w %d (want %d to %d)", errBadLength, l, minFrame, maxFrame)
	}
	if len(b)-hdrLen < int(l) {
		return nil, 0, nil
	}
	return b[hdrLen : hdrLen+int(l)], hdrLen + int(l), nil
}

// isEnd reports whether err means the other side went away (the end of a
// run, not a failure): end of file, a reset or a broken pipe on the
// socket, a tap device that is gone (EBADFD: detached; ENXIO, ENODEV: its
// namespace was torn down).
func isEnd(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) ||
		errors.Is(err, unix.EBADFD) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV)
}

// bridge moves frames between tap and conn, one goroutine per direction,
// until either direction ends. It returns nil if that was a clean end
// (isEnd), else the error. The other direction is left as it is: the
// process exits right after.
func bridge(tap *os.File, conn *net.UnixConn) error {
	tapRC, err := tap.SyscallConn()
	if err != nil {
		return fmt.Errorf("tap: %w", err)
	}
	sockRC, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	errc := make(chan error, 2)
	go func() { errc <- newFromTap(tapRC, sockRC).run() }()
	go func() { errc <- newToTap(sockRC, tapRC).run() }()
	if err := <-errc; err != nil && !isEnd(err) {
		return err
	}
	return nil
}

// fromTap is the tap-to-socket direction.
type fromTap struct {
	tap, sock syscall.RawConn
	buf       []byte // tapBufLen: frames packed in stream framing
	fill      int    // bytes of buf in use
	frames    int    // frames in buf
	sent      int    // bytes of buf written to the socket
	rerr      error  // the tap read's error, if any
	werr      error  // the socket write's error, if any
	// The callbacks, made once: a method value made at each call would
	// be an allocation per round.
	readFn, writeFn func(fd uintptr) bool
}

// newFromTap returns the tap-to-socket direction on tap and sock.
func newFromTap(tap, sock syscall.RawConn) *fromTap {
	b := &fromTap{tap: tap, sock: sock, buf: make([]byte, tapBufLen)}
	b.readFn, b.writeFn = b.readTap, b.writeSock
	return b
}

// run moves frames until an error: it returns it (isEnd for a clean end).
func (b *fromTap) run() error {
	for {
		if err := b.round(); err != nil {
			return err
		}
	}
}

// round is one turn of run: wait for the tap, gather what it has, write
// it all to the socket. It returns the error that ends the direction, nil
// to go on.
func (b *fromTap) round() error {
	b.fill, b.frames, b.rerr = 0, 0, nil
	if err := b.tap.Read(b.readFn); err != nil {
		return fmt.Errorf("tap: %w", err)
	}
	if b.fill > 0 {
		b.sent, b.werr = 0, nil
		if err := b.sock.Write(b.writeFn); err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		if b.werr != nil {
			return fmt.Errorf("write to passt: %w", b.werr)
		}
	}
	if b.rerr != nil {
		return fmt.Errorf("read from tap: %w", b.rerr)
	}
	return nil
}

// readTap reads frames from the tap descriptor fd into buf, each behind
// its length prefix, until the tap has none left, the batch is full or a
// largest frame would not fit. It reports whether to stop waiting: true
// once it has a frame or an error, false (wait for the tap to become
// readable) if it found nothing. At most tapBatch reads per call.
func (b *fromTap) readTap(fd uintptr) bool {
	for i := 0; i < tapBatch && b.frames < tapBatch && len(b.buf)-b.fill >= hdrLen+maxFrame; i++ {
		at := b.fill + hdrLen
		n, err := unix.Read(int(fd), b.buf[at:at+maxFrame])
		switch err {
		case nil:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return b.frames > 0
		default:
			b.rerr = err
			return true
		}
		if n < minFrame {
			continue // cannot happen on a tap: nothing to send
		}
		binary.BigEndian.PutUint32(b.buf[b.fill:], uint32(n))
		b.fill = at + n
		b.frames++
	}
	return true
}

// writeSock writes buf[sent:fill] to the socket descriptor fd, as much as
// it takes. It reports whether to stop waiting: true once all is written
// or on an error, false (wait for the socket to become writable) when it
// takes no more for now. The stream stays in step: a partial write is
// continued from where it stopped.
func (b *fromTap) writeSock(fd uintptr) bool {
	for b.sent < b.fill {
		n, err := unix.Write(int(fd), b.buf[b.sent:b.fill])
		switch err {
		case nil:
			b.sent += n
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			b.werr = err
			return true
		}
	}
	return true
}

// toTap is the socket-to-tap direction.
type toTap struct {
	sock, tap syscall.RawConn
	buf       []byte // sockBufLen: [p, end) not delivered yet
	p, end    int
	n         int    // bytes the last socket read brought
	rerr      error  // its error, if any
	werr      error  // the tap's error that ends the run, if any
	bad       error  // a bad length found in the stream
	drops     uint64 // frames the tap refused
	// The callbacks, made once (see fromTap).
	readFn, writeFn func(fd uintptr) bool
}

// newToTap returns the socket-to-tap direction on sock and tap.
func newToTap(sock, tap syscall.RawConn) *toTap {
	b := &toTap{sock: sock, tap: tap, buf: make([]byte, sockBufLen)}
	b.readFn, b.writeFn = b.readSock, b.writeTap
	return b
}

// run moves frames until the stream ends or fails, and returns why: io.EOF
// or another isEnd error for a clean end, else the error.
func (b *toTap) run() error {
	for {
		if err := b.round(); err != nil {
			return err
		}
	}
}

// round is one turn of run: wait for the socket, read what it has, write
// every whole frame to the tap. It returns the error that ends the
// direction (io.EOF at the end of the stream), nil to go on.
func (b *toTap) round() error {
	b.n, b.rerr = 0, nil
	if err := b.sock.Read(b.readFn); err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	if b.rerr != nil {
		return fmt.Errorf("read from passt: %w", b.rerr)
	}
	if b.n == 0 {
		return io.EOF
	}
	b.end += b.n
	if err := b.tap.Write(b.writeFn); err != nil {
		return fmt.Errorf("tap: %w", err)
	}
	if b.bad != nil {
		return fmt.Errorf("from passt: %w", b.bad)
	}
	if b.werr != nil {
		return fmt.Errorf("write to tap: %w", b.werr)
	}
	// The partial frame left, if any, moves to the front: less than one
	// largest frame, and room for the rest stays behind it.
	b.end = copy(b.buf, b.buf[b.p:b.end])
	b.p = 0
	return nil
}

// readSock reads what passt has queued into buf after end. It reports
// whether to stop waiting: true with data, end of file (n == 0) or an
// error, false (wait for the socket to become readable) if there is
// nothing yet.
func (b *toTap) readSock(fd uintptr) bool {
	for {
		n, err := unix.Read(int(fd), b.buf[b.end:])
		switch err {
		case nil:
			b.n = n
			return true
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			b.rerr = err
			return true
		}
	}
}

// writeTap writes every whole frame of buf[p:end] to the tap descriptor
// fd, one write(2) each. It reports whether to stop waiting: true when no
// whole frame is left or the stream or the tap failed, false (wait for the
// tap to become writable) if the tap takes no more for now. A frame the
// kernel refuses is counted in drops and skipped.
func (b *toTap) writeTap(fd uintptr) bool {
	for {
		frame, n, err := nextFrame(b.buf[b.p:b.end])
		if err != nil {
			b.bad = err
			return true
		}
		if n == 0 {
			return true
		}
		_, err = unix.Write(int(fd), frame)
		switch err {
		case nil:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case unix.EINVAL, unix.EMSGSIZE, unix.ENOBUFS, unix.ENOMEM:
			b.drops++
		default:
			b.werr = err
			return true
		}
		b.p += n
	}
}
