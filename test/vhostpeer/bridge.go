// bridge.go: the two directions between the virtqueues and the tap device
// (see the theory of operation in main.go).

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batches: the most frames one round moves before it publishes the avail
// index (and perhaps kicks).
const (
	rxBatch = 256
	txBatch = 64
)

// virtio-net header flags (virtio 1.x 5.1.6).
const (
	hdrNeedsCsum = 1
	hdrDataValid = 2
)

// errBackEnd marks a fault of the back end's in what it put in the rings.
var errBackEnd = errors.New("back end")

// backEndErr returns a fault of the back end's: "back end <what>".
func backEndErr(format string, args ...any) error {
	return fmt.Errorf("%w %s", errBackEnd, fmt.Sprintf(format, args...))
}

// isTapEnd reports whether err means the tap device went away (its
// namespace was torn down, or it was detached).
func isTapEnd(err error) bool {
	return errors.Is(err, unix.EBADFD) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV)
}

// bridge is both directions of one session.
type bridge struct {
	rx *rxDir
	tx *txDir
}

// eventFile returns a duplicate of eventfd fd as a file the runtime's
// poller waits on (fd is non-blocking, so the duplicate is too: they share
// the open file description).
func eventFile(fd int, name string) (syscall.RawConn, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", name, err)
	}
	return os.NewFile(uintptr(d), name).SyscallConn()
}

// newBridge returns the two directions of session s on tap.
func newBridge(s *session, tap *os.File) (*bridge, error) {
	tapRC, err := tap.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	rxCall, err := eventFile(s.call[0], "RX call")
	if err != nil {
		return nil, err
	}
	txCall, err := eventFile(s.call[1], "TX call")
	if err != nil {
		return nil, err
	}
	return &bridge{
		rx: newRxDir(s.g, s.has(fNetMrgRxbuf), tapRC, rxCall, s.kick[0]),
		tx: newTxDir(s.g, tapRC, txCall, s.kick[1]),
	}, nil
}

// waitCall waits until eventfd rc has been signalled and takes the count
// (a callback for RawConn.Read): false while there is nothing to take.
func waitCall(fd uintptr) bool {
	var b [8]byte
	for {
		_, err := unix.Read(int(fd), b[:])
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		return true
	}
}

// rxDir is the back-end-to-tap direction: queue 0.
type rxDir struct {
	g        *guestMem
	r        *ring
	mrg      bool
	tap      syscall.RawConn
	call     syscall.RawConn
	kickFd   int
	posted   []bool       // posted[i]: buffer i is the back end's
	iov      []unix.Iovec // one frame's buffers
	seen     uint16       // the used index up to which we looked
	frames   int          // frames written in this round
	werr     error        // the tap's error that ends the run
	bad      error        // a fault of the back end's
	drops    uint64       // frames the tap refused
	writeFn  func(fd uintptr) bool
	total    uint64 // frames delivered
	complete bool   // the round took every whole frame there was
}

// newRxDir returns the RX direction on g's RX ring.
func newRxDir(g *guestMem, mrg bool, tap, call syscall.RawConn, kickFd int) *rxDir {
	d := &rxDir{g: g, r: g.rx, mrg: mrg, tap: tap, call: call, kickFd: kickFd,
		posted: make([]bool, g.rx.n), iov: make([]unix.Iovec, g.rx.n)}
	for i := range d.posted {
		d.posted[i] = true
	}
	d.writeFn = d.writeTap
	return d
}

// run moves frames until an error, which it returns (a back-end fault, a
// tap gone).
func (d *rxDir) run() error {
	for {
		if err := d.round(); err != nil {
			return err
		}
	}
}

// round is one turn of run: every whole frame there is goes to the tap,
// the buffers are reposted and published (with a kick if the back end
// wants one); if there was none, interrupts are armed, the used index is
// looked at once more, and the round sleeps until the call eventfd fires.
func (d *rxDir) round() error {
	d.frames, d.complete = 0, false
	if err := d.tap.Write(d.writeFn); err != nil {
		return fmt.Errorf("tap: %w", err)
	}
	if d.bad != nil {
		return d.bad
	}
	if d.werr != nil {
		return fmt.Errorf("write to tap: %w", d.werr)
	}
	if d.frames > 0 {
		d.r.publish()
		if d.r.needKick() {
			if err := kick(d.kickFd); err != nil {
				return err
			}
		}
		if !d.complete {
			return nil // a full batch: go on at once
		}
	}
	d.r.interrupts(true)
	if d.r.usedIdx() == d.seen {
		if err := d.call.Read(waitCall); err != nil {
			return fmt.Errorf("RX call: %w", err)
		}
	}
	d.r.interrupts(false)
	return nil
}

// writeTap writes the frames of the used ring to the tap descriptor fd,
// one writev(2) each, straight from the buffers, and reposts their
// buffers, for up to rxBatch frames. It reports whether to stop waiting:
// false (wait for the tap to become writable) only if the tap takes no
// more for now.
func (d *rxDir) writeTap(fd uintptr) bool {
	r := d.r
	mask := uint16(r.n - 1)
	for d.frames < rxBatch {
		used := r.usedIdx()
		d.seen = used
		ready := used - r.lastUsed
		if ready == 0 {
			d.complete = true
			return true
		}
		if int(ready) > r.n {
			d.bad = backEndErr("moved the RX used index from %d to %d: more than the %d entries of the ring", r.lastUsed, used, r.n)
			return true
		}
		// The frame's first entry: its buffer starts with the header.
		e := r.usedRing[r.lastUsed&mask]
		if err := d.checkEntry(e); err != nil {
			d.bad = err
			return true
		}
		if e.len < vnetHdrLen {
			d.bad = backEndErr("returned RX buffer %d with %d bytes: shorter than the virtio-net header", e.id, e.len)
			return true
		}
		first := d.g.rxBuf(int(e.id))
		k := uint16(1)
		if d.mrg {
			k = binary.LittleEndian.Uint16(first[10:])
			if k == 0 || int(k) > r.n {
				d.bad = backEndErr("says num_buffers %d in RX buffer %d (ring of %d)", k, e.id, r.n)
				return true
			}
		}
		if k > ready {
			// The rest of the frame is not published yet: wait for the
			// next interrupt, with seen as it is.
			d.complete = true
			return true
		}
		total := 0
		for j := uint16(0); j < k; j++ {
			ej := r.usedRing[(r.lastUsed+j)&mask]
			if err := d.checkEntry(ej); err != nil {
				d.bad = err
				return true
			}
			d.posted[ej.id] = false // a second use in this frame is caught
			buf := d.g.rxBuf(int(ej.id))
			d.iov[j].Base = &buf[0]
			d.iov[j].SetLen(int(ej.len))
			total += int(ej.len)
		}
		if total < vnetHdrLen+ethHdrLen {
			d.bad = backEndErr("sent a frame of %d bytes (header included)", total)
			return true
		}
		trustDataValid(first[:e.len])
		_, _, errno := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&d.iov[0])), uintptr(k))
		switch errno {
		case 0:
			d.total++
		case unix.EINTR, unix.EAGAIN:
			// Not taken: the entries stay where they are, for the
			// next try.
			for j := uint16(0); j < k; j++ {
				d.posted[r.usedRing[(r.lastUsed+j)&mask].id] = true
			}
			if errno == unix.EINTR {
				continue
			}
			return false
		case unix.EINVAL, unix.EMSGSIZE, unix.ENOBUFS, unix.ENOMEM, unix.EFAULT:
			d.drops++
		default:
			d.werr = errno
			return true
		}
		// Repost: the buffers go back to the avail ring at once, so the
		// back end never starves.
		for j := uint16(0); j < k; j++ {
			id := uint16(r.usedRing[(r.lastUsed+j)&mask].id)
			d.posted[id] = true
			r.post(id)
		}
		r.lastUsed += k
		d.frames++
	}
	return true
}

// checkEntry checks used entry e of the RX ring: an id of the ring, a
// buffer that is the back end's, a length within it.
func (d *rxDir) checkEntry(e usedElem) error {
	switch {
	case e.id >= uint32(d.r.n):
		return backEndErr("returned RX id %d (ring of %d)", e.id, d.r.n)
	case e.len > uint32(d.g.rxBufLen):
		return backEndErr("wrote %d bytes into RX buffer %d of %d bytes", e.len, e.id, d.g.rxBufLen)
	case !d.posted[e.id]:
		return backEndErr("returned RX buffer %d twice", e.id)
	}
	return nil
}

// trustDataValid turns DATA_VALID in the header at the start of b (the
// first buffer of a frame: header, then the frame's start) into a partial
// checksum on a TCP or UDP packet, which the namespace's stack delivers
// without verifying, as a Linux guest does with DATA_VALID; tun ignores
// DATA_VALID. The checksum's position is taken from the IPv4 or IPv6
// header; any other frame (a fragment, extension headers, headers not in
// the first buffer) just loses the flag and is verified.
func trustDataValid(b []byte) {
	if b[0]&hdrDataValid == 0 || b[0]&hdrNeedsCsum != 0 {
		return
	}
	b[0] &^= hdrDataValid
	f := b[vnetHdrLen:]
	if len(f) < ethHdrLen+40 {
		return
	}
	var l4 int
	var proto byte
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		ip := f[ethHdrLen:]
		if ip[0]>>4 != 4 || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			return
		}
		l4, proto = ethHdrLen+int(ip[0]&0xf)*4, ip[9]
	case 0x86dd:
		l4, proto = ethHdrLen+40, f[ethHdrLen+6]
	default:
		return
	}
	off := 0
	switch proto {
	case 6:
		off = 16
	case 17:
		off = 6
	default:
		return
	}
	if l4+off+2 > len(f) {
		return
	}
	b[0] |= hdrNeedsCsum
	binary.LittleEndian.PutUint16(b[6:], uint16(l4))
	binary.LittleEndian.PutUint16(b[8:], uint16(off))
}

// txDir is the tap-to-back-end direction: queue 1.
type txDir struct {
	g        *guestMem
	r        *ring
	tap      syscall.RawConn
	call     syscall.RawConn
	kickFd   int
	free     []uint16 // buffers that are ours
	inflight []bool   // inflight[i]: buffer i is the back end's
	batch    int      // frames posted in this round
	rerr     error    // the tap's error that ends the run
	bad      error    // a fault of the back end's
	readFn   func(fd uintptr) bool
	total    uint64 // frames sent
}

// newTxDir returns the TX direction on g's TX ring.
func newTxDir(g *guestMem, tap, call syscall.RawConn, kickFd int) *txDir {
	d := &txDir{g: g, r: g.tx, tap: tap, call: call, kickFd: kickFd,
		free: make([]uint16, 0, g.tx.n), inflight: make([]bool, g.tx.n)}
	for i := g.tx.n - 1; i >= 0; i-- {
		d.free = append(d.free, uint16(i))
	}
	d.readFn = d.readTap
	return d
}

// run moves frames until an error, which it returns.
func (d *txDir) run() error {
	for {
		if err := d.round(); err != nil {
			return err
		}
	}
}

// round is one turn of run: take back completed buffers; with none free,
// arm the TX interrupt, look again and sleep on the call eventfd;
// otherwise read what the tap has into free buffers (sleeping until it
// has something) and publish them with one kick if the back end wants
// one.
func (d *txDir) round() error {
	if err := d.reclaim(); err != nil {
		return err
	}
	if len(d.free) == 0 {
		d.r.interrupts(true)
		if err := d.reclaim(); err != nil {
			return err
		}
		if len(d.free) == 0 {
			if err := d.call.Read(waitCall); err != nil {
				return fmt.Errorf("TX call: %w", err)
			}
		}
		d.r.interrupts(false)
		return nil
	}
	d.batch = 0
	if err := d.tap.Read(d.readFn); err != nil {
		return fmt.Errorf("tap: %w", err)
	}
	if d.batch > 0 {
		d.r.publish()
		if d.r.needKick() {
			if err := kick(d.kickFd); err != nil {
				return err
			}
		}
	}
	if d.rerr != nil {
		return fmt.Errorf("read from tap: %w", d.rerr)
	}
	return nil
}

// reclaim takes back the buffers the back end has used.
func (d *txDir) reclaim() error {
	r := d.r
	used := r.usedIdx()
	if n := used - r.lastUsed; int(n) > r.n {
		return backEndErr("moved the TX used index from %d to %d: more than the %d entries of the ring", r.lastUsed, used, r.n)
	}
	for ; r.lastUsed != used; r.lastUsed++ {
		e := r.usedRing[int(r.lastUsed)&(r.n-1)]
		if e.id >= uint32(r.n) || !d.inflight[e.id] {
			return backEndErr("returned TX id %d, which it did not have (ring of %d)", e.id, r.n)
		}
		d.inflight[e.id] = false
		d.free = append(d.free, uint16(e.id))
	}
	return nil
}

// readTap reads frames from the tap descriptor fd straight into free TX
// buffers (the tap's vnet header is the buffer's virtio-net header) and
// posts each as one readable descriptor, up to txBatch or while buffers
// are free. It reports whether to stop waiting: false (wait for the tap
// to become readable) only if it found nothing.
func (d *txDir) readTap(fd uintptr) bool {
	for d.batch < txBatch && len(d.free) > 0 {
		id := d.free[len(d.free)-1]
		buf := d.g.txBuf(int(id))
		n, err := unix.Read(int(fd), buf)
		switch err {
		case nil:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return d.batch > 0
		default:
			d.rerr = err
			return true
		}
		if n < vnetHdrLen+ethHdrLen {
			continue // cannot happen on a tap: nothing to send
		}
		// A driver never sets DATA_VALID; num_buffers is 0 on TX (tun
		// leaves those two bytes as they were).
		buf[0] &^= hdrDataValid
		buf[10], buf[11] = 0, 0
		d.r.desc[id].len = uint32(n)
		d.free = d.free[:len(d.free)-1]
		d.inflight[id] = true
		d.r.post(id)
		d.batch++
		d.total++
	}
	return true
}
