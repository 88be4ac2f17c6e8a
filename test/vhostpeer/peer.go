// peer.go: peer mode: the tap, the connection, qemu 7.2's handshake, the
// bridge, and the stop at the end.

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/test/tapdev"
)

// Tap offload flags (linux/if_tun.h; TUNSETOFFLOAD's argument).
const (
	tunFCsum   = 0x01
	tunFTSO4   = 0x02
	tunFTSO6   = 0x04
	tunFTSOECN = 0x08
)

// session is one front end on one connection: memory, rings, eventfds.
type session struct {
	o        opts
	c        *ctl
	g        *guestMem
	features uint64 // acked virtio features
	protocol uint64 // acked protocol features
	// kick and call eventfds of queue 0 (RX) and 1 (TX): ours, made
	// non-blocking (as qemu's event notifiers); the back end receives
	// duplicates. masked are the notifiers qemu hands at init before
	// the real ones.
	kick, call, masked, errfd [2]int
}

// newSession connects to o.socket and makes the guest memory and the
// eventfds (nothing is sent yet).
func newSession(o opts) (*session, error) {
	rxBuf := o.rxBuf
	if rxBuf == 0 {
		rxBuf = mrgBufLen
		if o.noMrg {
			rxBuf = frameBufLen
		}
	}
	g, err := newGuestMem(o.queue, rxBuf)
	if err != nil {
		return nil, err
	}
	s := &session{o: o, g: g}
	for q := 0; q < 2; q++ {
		for _, p := range []*int{&s.kick[q], &s.call[q], &s.masked[q], &s.errfd[q]} {
			if *p, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
				s.close()
				return nil, fmt.Errorf("eventfd: %w", err)
			}
		}
	}
	conn, err := tapdev.DialRetry(o.socket, o.wait)
	if err != nil {
		s.close()
		return nil, err
	}
	s.c = &ctl{c: conn}
	if o.verbose {
		s.c.trace = func(f string, a ...any) { fmt.Fprintf(os.Stderr, "vhostpeer: "+f+"\n", a...) }
	}
	return s, nil
}

// close ends the session: the connection, the eventfds, the memory.
func (s *session) close() {
	if s.c != nil {
		s.c.c.Close()
	}
	for q := 0; q < 2; q++ {
		for _, fd := range []int{s.kick[q], s.call[q], s.masked[q], s.errfd[q]} {
			if fd > 0 {
				unix.Close(fd)
			}
		}
	}
	s.g.close()
}

// wanted returns the virtio features the peer acks of offered.
func (s *session) wanted(offered uint64) uint64 {
	want := uint64(1)<<fVersion1 | 1<<fProtocolFeats
	if !s.o.noMrg {
		want |= 1 << fNetMrgRxbuf
	}
	if !s.o.noEventIdx {
		want |= 1 << fRingEventIdx
	}
	acked := offered & want
	if !s.o.noOffload {
		// Segmentation needs the checksum offload of its direction
		// (virtio 1.x 5.1.3.1), ECN needs segmentation.
		if offered&(1<<fNetCsum) != 0 {
			acked |= 1 << fNetCsum
			acked |= offered & (1<<fNetHostTSO4 | 1<<fNetHostTSO6)
			if acked&(1<<fNetHostTSO4|1<<fNetHostTSO6) != 0 {
				acked |= offered & (1 << fNetHostECN)
			}
		}
		if offered&(1<<fNetGuestCsum) != 0 {
			acked |= 1 << fNetGuestCsum
			acked |= offered & (1<<fNetGuestTSO4 | 1<<fNetGuestTSO6)
			if acked&(1<<fNetGuestTSO4|1<<fNetGuestTSO6) != 0 {
				acked |= offered & (1 << fNetGuestECN)
			}
		}
	}
	return acked
}

// has reports whether virtio feature bit f was acked.
func (s *session) has(f uint) bool { return s.features&(1<<f) != 0 }

// tapOffload returns TUNSETOFFLOAD's flags for the acked features: what
// the back end takes from us, the tap may hand us.
func (s *session) tapOffload() int {
	fl := 0
	if s.has(fNetCsum) {
		fl |= tunFCsum
		if s.has(fNetHostTSO4) {
			fl |= tunFTSO4
		}
		if s.has(fNetHostTSO6) {
			fl |= tunFTSO6
		}
		if s.has(fNetHostECN) {
			fl |= tunFTSOECN
		}
	}
	return fl
}

// init is the part of qemu 7.2's handshake done once per connection
// (vhost_user_backend_init, vhost_dev_init): features, protocol features,
// owner, features again, the masked call notifiers and the error
// notifiers. It fails if the back end lacks VERSION_1.
func (s *session) init() error {
	offered, err := s.c.getU64(reqGetFeatures)
	if err != nil {
		return err
	}
	if offered&(1<<fVersion1) == 0 {
		return fmt.Errorf("back end offers features %#x without VERSION_1 (bit 32)", offered)
	}
	if offered&(1<<fProtocolFeats) != 0 {
		pf, err := s.c.getU64(reqGetProtocolFeatures)
		if err != nil {
			return err
		}
		s.protocol = pf & pfAcked
		if err := s.c.setU64(reqSetProtocolFeatures, s.protocol); err != nil {
			return err
		}
		s.c.replyAck = s.protocol&(1<<pfReplyAck) != 0
		if s.protocol&(1<<pfMQ) != 0 {
			qn, err := s.c.getU64(reqGetQueueNum)
			if err != nil {
				return err
			}
			if qn < 1 {
				return fmt.Errorf("back end says it has %d queue pairs", qn)
			}
		}
	}
	if err := s.c.send(reqSetOwner, 0, nil); err != nil {
		return err
	}
	again, err := s.c.getU64(reqGetFeatures)
	if err != nil {
		return err
	}
	if again != offered {
		return fmt.Errorf("back end offered features %#x, then %#x", offered, again)
	}
	s.features = s.wanted(offered)
	s.g.rx.eventIdx, s.g.tx.eventIdx = s.has(fRingEventIdx), s.has(fRingEventIdx)
	for q := uint64(0); q < 2; q++ {
		if err := s.c.setU64(reqSetVringCall, q, s.masked[q]); err != nil {
			return err
		}
		if err := s.c.setU64(reqSetVringErr, q, s.errfd[q]); err != nil {
			return err
		}
	}
	if s.o.verbose {
		fmt.Fprintf(os.Stderr, "vhostpeer: offered %#x, acked %#x, protocol %#x, tap offload %#x\n",
			offered, s.features, s.protocol, s.tapOffload())
	}
	return nil
}

// start is what qemu sends when the guest's driver sets DRIVER_OK
// (vhost_dev_start, vhost_net_start): features, the memory table, each
// ring (NUM, BASE, ADDR, KICK, CALL), then both enabled. The rings are
// reset and every RX buffer is posted first, as a driver fills its RX
// queue before it tells the device it is ready.
func (s *session) start() error {
	s.g.reset()
	s.g.fillDescs()
	rx := s.g.rx
	for i := 0; i < rx.n; i++ {
		rx.post(uint16(i))
	}
	rx.interrupts(true)
	s.g.tx.interrupts(false)
	rx.publish()
	rx.published = rx.availIdx

	if err := s.c.setU64(reqSetFeatures, s.features); err != nil {
		return err
	}
	fds := make([]int, len(s.g.regions))
	for i := range fds {
		fds[i] = s.g.fd
	}
	flags := uint32(0)
	if s.c.replyAck {
		flags = flagNeedReply
	}
	if err := s.c.send(reqSetMemTable, flags, memTable(s.g.regions), fds...); err != nil {
		return err
	}
	if err := s.c.sync(reqSetMemTable); err != nil {
		return err
	}
	for q, r := range []*ring{s.g.rx, s.g.tx} {
		if err := s.c.send(reqSetVringNum, 0, vringState(uint32(q), uint32(r.n))); err != nil {
			return err
		}
		if err := s.c.send(reqSetVringBase, 0, vringState(uint32(q), 0)); err != nil {
			return err
		}
		if err := s.c.send(reqSetVringAddr, 0, vringAddr(uint32(q), s.g.qva(r.descOff), s.g.qva(r.usedOff), s.g.qva(r.availOff))); err != nil {
			return err
		}
		if err := s.c.setU64(reqSetVringKick, uint64(q), s.kick[q]); err != nil {
			return err
		}
		if err := s.c.setU64(reqSetVringCall, uint64(q), s.call[q]); err != nil {
			return err
		}
	}
	if s.protocol != 0 || s.has(fProtocolFeats) {
		for q := uint32(0); q < 2; q++ {
			if err := s.c.send(reqSetVringEnable, 0, vringState(q, 1)); err != nil {
				return err
			}
		}
	}
	// The first RX kick: buffers are there (a back end that watches the
	// RX kick learns it; one that does not finds them anyway).
	return kick(s.kick[0])
}

// stop is qemu's vhost_dev_stop: both rings disabled, then
// GET_VRING_BASE of each, whose reply must name the ring. It returns the
// two bases (the back end's next avail index of each ring).
func (s *session) stop() ([2]uint32, error) {
	var bases [2]uint32
	if s.has(fProtocolFeats) {
		for q := uint32(0); q < 2; q++ {
			if err := s.c.send(reqSetVringEnable, 0, vringState(q, 0)); err != nil {
				return bases, err
			}
		}
	}
	for q := uint32(0); q < 2; q++ {
		if err := s.c.send(reqGetVringBase, 0, vringState(q, 0)); err != nil {
			return bases, err
		}
		p, err := s.c.reply(reqGetVringBase, 8)
		if err != nil {
			return bases, err
		}
		if idx := binary.LittleEndian.Uint32(p); idx != q {
			return bases, fmt.Errorf("back end answered GET_VRING_BASE %d for ring %d", q, idx)
		}
		bases[q] = binary.LittleEndian.Uint32(p[4:])
	}
	return bases, nil
}

// kick writes 1 to eventfd fd (a kick, or a test's interrupt).
func kick(fd int) error {
	var one = [8]byte{1}
	for {
		_, err := unix.Write(fd, one[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil && err != unix.EAGAIN { // EAGAIN: the counter is full, a kick is pending anyway
			return fmt.Errorf("kick: %w", err)
		}
		return nil
	}
}

// peerMain is peer mode: the tap, the connection, the handshake after
// o.cycles start/stop cycles, "ready", then the bridge until the back end
// closes, the tap goes, or a termination signal (then the rings are
// stopped as at qemu's shutdown). It returns nil at a clean end.
func peerMain(o opts, out io.Writer) error {
	tap, err := tapdev.Create(o.netns, o.tap, tapdev.Options{MAC: o.mac, MTU: o.mtu, VnetHdr: true})
	if err != nil {
		return err
	}
	defer tap.Close()
	s, err := newSession(o)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.init(); err != nil {
		return err
	}
	for i := 0; i < o.cycles; i++ {
		if err := s.start(); err != nil {
			return fmt.Errorf("cycle %d: %w", i+1, err)
		}
		if _, err := s.stop(); err != nil {
			return fmt.Errorf("cycle %d: %w", i+1, err)
		}
	}
	if err := tapdev.SetOffload(tap, s.tapOffload()); err != nil {
		return err
	}
	if err := s.start(); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(out, "ready"); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	b, err := newBridge(s, tap)
	if err != nil {
		return err
	}
	ended, closed := make(chan error, 2), make(chan error, 1)
	go func() { ended <- b.rx.run() }()
	go func() { ended <- b.tx.run() }()
	go func() { closed <- watchClose(s.c) }()
	var end error
	select {
	case end = <-ended:
	case end = <-closed:
	case <-sig:
		// qemu's shutdown: stop the rings, then close. watchClose
		// must give the socket back first (its read would take the
		// replies): a deadline in the past ends it. The bridge's
		// goroutines keep going until the process exits, on memory
		// that stays mapped until then.
		s.c.c.SetReadDeadline(time.Now())
		if err := <-closed; errors.Is(err, errClosed) {
			return nil
		}
		if _, err := s.stop(); err != nil && !errors.Is(err, errClosed) {
			return fmt.Errorf("at the end: %w", err)
		}
		return nil
	}
	if end == nil || errors.Is(end, errClosed) || isTapEnd(end) {
		return nil
	}
	return end
}

// watchClose waits until the back end closes the control connection (it
// sends nothing unprompted: no BACKEND_REQ channel was negotiated) and
// returns errClosed, or an error if it sent bytes out of turn.
func watchClose(c *ctl) error {
	var b [1]byte
	c.c.SetReadDeadline(time.Time{})
	n, err := c.c.Read(b[:])
	if n > 0 {
		return errors.New("back end sent a message nobody asked for")
	}
	if err == nil || isConnEnd(err) {
		return errClosed
	}
	return fmt.Errorf("control socket: %w", err)
}
