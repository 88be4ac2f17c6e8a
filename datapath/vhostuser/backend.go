// Package vhostuser is passt mode's vhost-user guest back end (--vhost-user):
// qemu hands us the virtio-net device's two queues and the guest's RAM over
// the UNIX socket, and frames move between host sockets and the guest's own
// buffers without qemu on the data path. This file holds the Backend, its
// life cycle (listen, accept one front end, serve, accept the next) and the
// control protocol's state machine; mem.go the guest memory, vring.go the
// split virtqueues, proto.go the wire format, rx.go and tx.go the two
// directions of frames.
//
// # Theory of operation
//
// Connection. As the stream back end: a listening socket (index 0 in the
// loop), at most one front end (index 1); a second one is accepted and
// closed at once. The front end's control messages are read without
// blocking, assembled (header, then payload, descriptors by SCM_RIGHTS
// with whichever part they come), checked (proto.go) and applied in order.
// A protocol violation (a bad header, a payload of the wrong size, the
// wrong number of descriptors, a request we do not know) ends the
// connection with one log line: EventDown, or ErrDone with oneOff or for
// a socket handed over with --fd. So does a hang-up. A request that is
// well formed but cannot be honoured (a ring size that is not a power of
// two, memory that cannot be mapped) is refused: its REPLY_ACK says so
// (qemu then fails the device start) and the ring stays out of service.
//
// Rings. RX (queue 0, towards the guest) and TX (queue 1) are served once
// started (a kick descriptor), enabled, and resolved in mapped memory. The
// kick eventfds are indexes 2 and 3 in the loop, read with raw system
// calls (they share their open file description with qemu: their flags are
// never touched). A TX kick means frames: the engine calls Read, which pops
// chains until the ring is empty, then asks for kicks again (avail_event
// with event-idx) and looks once more, so that no frame is missed between
// the last pop and the request. The RX kick matters only while the guest
// has given us no buffers: then Reserve refuses, kicks are asked for, and
// the kick that comes makes Ready report EventWritable; otherwise RX kicks
// are suppressed.
//
// Guest errors. Everything in guest memory is the guest's to change at any
// moment: each descriptor is read once and checked (vring.go). A bad chain
// is dropped (returned unused if its head is an index of the ring), a ring
// whose avail index runs more than its size ahead is stopped; each kind is
// logged once per connection, counted always; nothing a guest writes makes
// us exit or index outside the regions.
//
// Memory changes. SET_MEM_TABLE may come at any time. Slices into guest
// memory are held only within one loop callback (TX frames are copied out
// at Read, RX staging copies in at Commit) or, for direct RX views, until
// the next control message that touches the memory or the RX ring, which
// takes them back first (rx.go). So remapping between two callbacks is
// safe.
package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/datapath/logging"
	"gopasst/datapath/sys"
	"gopasst/datapath/tap"
	"gopasst/isolation/allow"
)

// Descriptor indexes for the Watcher and Ready.
const (
	idxListen = 0
	idxConn   = 1
	idxKick   = 2 // + queue index
)

// ErrDone is tap.ErrDone: the one-off front end went away.
var ErrDone = tap.ErrDone

// Stats counts what crossed the rings and what went wrong.
type Stats struct {
	FramesIn, BytesIn                uint64 // frames from the guest (TX ring)
	FramesOut, BytesOut, DroppedOut  uint64 // frames to the guest (RX ring); dropped: no buffers, no guest, ...
	NoRoom                           uint64 // of those dropped: the guest's buffers did not hold the frame
	BadChains, BrokenRings, BadIn    uint64 // chains dropped; rings stopped; TX frames of a bad length
	Linearized                       uint64 // TX frames the guest scattered over several buffers
	SoftCsum, SoftGSO, SoftSegments  uint64 // offloads the guest did not negotiate, done here
	Interrupts, Kicks                uint64 // call eventfd writes; kick eventfd reads
	Messages, Connects, Disconnects  uint64
	Refused, Starved                 uint64 // front ends refused (one connected); Reserve refusals for want of RX buffers
	MergedFrames, MaxBuffersPerFrame uint64 // RX frames over more than one chain; the most chains one took
	DirectOut                        uint64 // RX frames written by their producer straight into guest buffers
	Split                            uint64 // TX frames whose payload was written from guest memory (headers copied only)
}

// Backend is the vhost-user guest back end: see the theory of operation.
// Not safe for concurrent use: everything runs on the loop's thread.
type Backend struct {
	listen int // listening socket, -1 without one (--fd)
	conn   int // the front end, -1 while none is connected
	oneOff bool
	w      tap.Watcher
	pcap   tap.Pcap

	// Message assembly.
	in    [hdrLen + maxPayload]byte
	inLen int
	need  int // bytes of the message being assembled: hdrLen, then hdrLen+size
	fds   [maxFDs]int
	nfds  int
	oob   []byte
	iov   unix.Iovec
	mh    unix.Msghdr
	m     msg
	rep   [hdrLen + 8]byte
	repIv unix.Iovec
	repMh unix.Msghdr

	// Negotiated state, reset at each connection.
	acked    uint64 // SET_FEATURES
	ackedSet bool
	proto    uint64 // SET_PROTOCOL_FEATURES
	status   uint64 // SET_STATUS
	vnetLen  int    // virtio-net header in front of every frame: 12 (VERSION_1 or MRG_RXBUF), else 10
	mem      memTable
	vq       [numQueues]vring
	up       bool   // the RX ring was served at the last check (EventUp on the way there)
	logged   uint32 // guest errors logged this connection (logOnce)

	rx rxState
	tx txState

	sa    unix.RawSockaddrAny
	Stats Stats
}

var _ tap.Backend = (*Backend)(nil)

// New makes the vhost-user back end. listenFD: the listening socket (-s
// PATH, opened before the sandbox by tap.ListenStream), -1 when a
// connected socket was handed over (--fd); connFD: a connected front end
// or -1; oneOff: the first front end's hang-up ends the run (ErrDone;
// implied without a listener); queueLen: frames a producer may hold
// reserved at once (at least 1); p: capture, or nil (with a capture no
// offloads are used, so that it records complete frames). Everything the
// back end uses per frame is allocated here.
func New(listenFD, connFD int, oneOff bool, queueLen int, p tap.Pcap) *Backend {
	b := &Backend{listen: listenFD, conn: -1, oneOff: oneOff, pcap: p}
	b.oob = make([]byte, unix.CmsgSpace(4*maxFDs))
	b.mh.Iov = &b.iov
	b.mh.SetIovlen(1)
	b.repMh.Iov = &b.repIv
	b.repMh.SetIovlen(1)
	for i := range b.vq {
		b.vq[i].kick, b.vq[i].call, b.vq[i].errFD = -1, -1, -1
	}
	b.rx.init(queueLen)
	b.tx.init()
	b.resetSession()
	if connFD >= 0 {
		b.conn = connFD
	}
	return b
}

// resetSession forgets everything a front end negotiated: features,
// memory, rings (closing their descriptors), the message being assembled.
func (b *Backend) resetSession() {
	b.closeFDs()
	b.inLen, b.need = 0, hdrLen
	b.acked, b.ackedSet, b.proto, b.status = 0, false, 0, 0
	b.vnetLen = 12
	b.tx.pendingN = 0
	b.tx.dropViews()
	b.mem.unmap()
	for q := range b.vq {
		b.stopRing(q, true)
		b.vq[q].resetState()
	}
	b.up, b.logged = false, 0
	b.rx.refused, b.rx.poolN, b.rx.backoff, b.rx.misses = false, 0, 0, 0
	for i := range b.rx.slots {
		sl := &b.rx.slots[i]
		sl.nch, sl.direct, sl.view, sl.hdr = 0, false, nil, nil
	}
}

// Watch implements tap.Backend: the listener and, if one is connected
// already (--fd), the front end.
func (b *Backend) Watch(w tap.Watcher) error {
	b.w = w
	if b.listen >= 0 {
		if err := w.Watch(b.listen, unix.EPOLLIN, idxListen); err != nil {
			return fmt.Errorf("vhost-user socket listener: %w", err)
		}
	}
	if b.conn >= 0 {
		if err := w.Watch(b.conn, unix.EPOLLIN|unix.EPOLLRDHUP, idxConn); err != nil {
			return fmt.Errorf("vhost-user socket: %w", err)
		}
	}
	return nil
}

// Connected reports whether a front end is connected.
func (b *Backend) Connected() bool { return b.conn >= 0 }

// Ready implements tap.Backend. Listener: accept (the first front end, or
// one refused at once). Front end: its messages, applied in order; a
// hang-up or a protocol violation ends it (EventDown, or ErrDone). Kicks:
// TX means frames (EventFrames), RX means buffers for a producer that was
// refused (EventWritable). A message that brings the RX ring into service
// reports EventUp; one that brings TX in, EventFrames (frames may be
// waiting already).
func (b *Backend) Ready(idx uint32, events uint32) (tap.Event, error) {
	switch idx {
	case idxListen:
		return b.accept()
	case idxConn:
		if b.conn < 0 {
			return 0, nil
		}
		if events&unix.EPOLLIN != 0 {
			ev, err := b.readMessages()
			if err != nil {
				if err != errHangUp {
					logging.Warnf("vhost-user: %v: connection closed", err)
				}
				return b.down(err.Error())
			}
			return ev, nil
		}
		if events&(unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 {
			return b.down("hang-up")
		}
	case idxKick + rxQ:
		b.drainKick(rxQ)
		return b.rxKicked(), nil
	case idxKick + txQ:
		b.drainKick(txQ)
		if b.vq[txQ].ready() && b.vq[txQ].enabled {
			return tap.EventFrames, nil
		}
	}
	return 0, nil
}

// accept takes a connection from the listener: the front end if none is
// connected (or the one connected has hung up: EventDown for it, or
// ErrDone with oneOff), else closed at once with one log line.
func (b *Backend) accept() (tap.Event, error) {
	if b.listen < 0 {
		return 0, nil
	}
	fd := tap.AcceptNext(b.listen, &b.sa, "vhost-user socket")
	if fd < 0 {
		return 0, nil
	}
	var ev tap.Event
	if b.conn >= 0 && b.connGone() {
		// The front end went and the next one came within one wait
		// of the loop, which reports the listener first: the old one
		// ends here, not at its hang-up event.
		e, err := b.down("hang-up")
		if err != nil {
			unix.Close(fd)
			return 0, err
		}
		ev = e
	}
	if b.conn >= 0 {
		unix.Close(fd)
		b.Stats.Refused++
		logging.Infof("vhost-user: refused a connection, one front end is connected already")
		return 0, nil
	}
	b.resetSession()
	b.conn = fd
	if b.w != nil {
		if err := b.w.Watch(fd, unix.EPOLLIN|unix.EPOLLRDHUP, idxConn); err != nil {
			unix.Close(fd)
			b.conn = -1
			return 0, fmt.Errorf("vhost-user socket: %w", err)
		}
	}
	b.Stats.Connects++
	logging.Infof("vhost-user: front end connected")
	return ev, nil
}

// connGone reports whether the connected front end has hung up (or its
// socket failed), with a peek that takes nothing: no control buffer, so
// that no descriptor it sent is installed by the peek.
func (b *Backend) connGone() bool {
	var one [1]byte
	iov := unix.Iovec{Base: &one[0]}
	iov.SetLen(1)
	var mh unix.Msghdr
	mh.Iov = &iov
	mh.SetIovlen(1)
	r, e := sys.Recvmsg(b.conn, &mh, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return (e == 0 && r == 0) || (e != 0 && e != unix.EAGAIN)
}

var _ = allow.Syscall(allow.Passt, "close", "vhostuser: closing the front end's connection, its eventfds and memory descriptors when replaced or done with (Backend.down, closeFDs, setRingFD, apply)")

// down ends the connection: everything negotiated is forgotten, the
// memory unmapped. Returns EventDown, or ErrDone with oneOff or without
// a listener.
func (b *Backend) down(why string) (tap.Event, error) {
	if b.w != nil {
		b.w.Unwatch(b.conn)
	}
	unix.Close(b.conn)
	b.conn = -1
	b.resetSession()
	b.Stats.Disconnects++
	logging.Infof("vhost-user: front end disconnected (%s)", why)
	logging.Debugf("vhost-user: %+v", b.Stats)
	if b.oneOff || b.listen < 0 {
		return 0, ErrDone
	}
	return tap.EventDown, nil
}

// Close implements tap.Backend: front end, rings, memory and listener.
func (b *Backend) Close() error {
	var err error
	if b.conn >= 0 {
		err = unix.Close(b.conn)
		b.conn = -1
	}
	b.resetSession()
	if b.listen >= 0 {
		if e := unix.Close(b.listen); err == nil {
			err = e
		}
		b.listen = -1
	}
	return err
}

// closeFDs closes the descriptors of a message being assembled.
func (b *Backend) closeFDs() {
	for i := 0; i < b.nfds; i++ {
		unix.Close(b.fds[i])
	}
	b.nfds = 0
}

// errHangUp is readMessages' end of file.
var errHangUp = errors.New("hang-up")

// readMessages reads and applies every complete message the front end
// has sent. Returns the events the messages caused, or an error that ends
// the connection.
func (b *Backend) readMessages() (tap.Event, error) {
	var ev tap.Event
	for {
		got, err := b.recv()
		if err != nil {
			return ev, err
		}
		if !got {
			return ev, nil
		}
		if b.inLen < b.need {
			continue
		}
		if b.need == hdrLen {
			_, _, size, err := parseHeader(b.in[:hdrLen])
			if err != nil {
				return ev, err
			}
			b.need = hdrLen + int(size)
			if size > 0 {
				continue
			}
		}
		e, err := b.handle()
		b.closeFDs()
		b.inLen, b.need = 0, hdrLen
		ev |= e
		if err != nil {
			return ev, err
		}
	}
}

var _ = allow.Syscall(allow.Passt, "recvmsg", "vhostuser.Backend.recv: control messages of the front end, with descriptors (SCM_RIGHTS: guest memory, eventfds)")

// recv reads what is missing of the current message (never more, so that
// descriptors arrive with the message they belong to), taking descriptors
// that come with it. Returns whether bytes arrived, or an error for end
// of file, a read error, truncated or too many descriptors.
func (b *Backend) recv() (bool, error) {
	b.iov.Base = &b.in[b.inLen]
	b.iov.SetLen(b.need - b.inLen)
	b.mh.Control = &b.oob[0]
	b.mh.SetControllen(len(b.oob))
	b.mh.Flags = 0
	r, e := sys.Recvmsg(b.conn, &b.mh, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if e == unix.EAGAIN {
		return false, nil
	}
	if e != 0 {
		return false, fmt.Errorf("read: %w", e)
	}
	if err := b.takeFDs(); err != nil {
		return false, err
	}
	if r == 0 {
		return false, errHangUp
	}
	b.inLen += r
	b.Stats.Messages++
	return true, nil
}

// takeFDs keeps the descriptors of the control data recvmsg left in oob
// (without allocating: the headers are read in place). Any beyond maxFDs,
// or a truncated control buffer, is an error (those that came are closed).
func (b *Backend) takeFDs() error {
	cl := int(b.mh.Controllen)
	var err error
	if b.mh.Flags&unix.MSG_CTRUNC != 0 {
		err = errors.New("too many descriptors (control data truncated)")
	}
	for off := 0; off+unix.SizeofCmsghdr <= cl; {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b.oob[off]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || off+l > cl {
			break
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS {
			data := b.oob[off+unix.CmsgLen(0) : off+l]
			for i := 0; i+4 <= len(data); i += 4 {
				fd := int(int32(binary.NativeEndian.Uint32(data[i:])))
				if b.nfds == maxFDs {
					unix.Close(fd)
					err = errors.New("too many descriptors")
					continue
				}
				b.fds[b.nfds] = fd
				b.nfds++
			}
		}
		off += unix.CmsgSpace(l - unix.CmsgLen(0))
	}
	return err
}

// takeFD hands over descriptor i of the message (the caller owns it).
func (b *Backend) takeFD(i int) int {
	fd := b.fds[i]
	b.fds[i] = -1
	return fd
}

// handle parses and applies the assembled message.
func (b *Backend) handle() (tap.Event, error) {
	req, flags, _, _ := parseHeader(b.in[:hdrLen])
	m := &b.m
	*m = msg{}
	if err := parsePayload(req, b.in[hdrLen:b.inLen], m); err != nil {
		return 0, err
	}
	m.flags = flags
	if want := fdsWanted(m); want != b.nfds {
		return 0, fmt.Errorf("%s with %d descriptors (want %d)", reqName(req), b.nfds, want)
	}
	// Give back what the guest handed us before anything changes: a
	// remap, a stop. RX chains held (rx.go) only for what touches the
	// RX ring or the memory: qemu re-sends SET_VRING_CALL whenever the
	// guest masks and unmasks the interrupt, and that needs nothing.
	b.tx.complete(b)
	switch req {
	case reqSetVringCall, reqSetVringErr, reqGetFeatures, reqGetProtocolFeatures, reqGetQueueNum, reqGetStatus, reqSetStatus, reqSendRARP, reqGetMaxMemSlots:
	default:
		b.releaseRX()
	}
	if logging.Tracing() {
		logging.Tracef("vhost-user: %s", reqName(req))
	}
	ev, res, replied, err := b.apply(m)
	if err != nil {
		return 0, err
	}
	if !replied && flags&flagNeedReply != 0 && b.proto&pfReplyAck != 0 {
		if err := b.reply(req, res); err != nil {
			return 0, err
		}
	}
	return ev | b.checkUp(), nil
}

// apply is the state machine: it applies request m. Returns events, the
// REPLY_ACK value (0 success, 1 refused), whether it replied itself, and
// an error for a violation that ends the connection.
func (b *Backend) apply(m *msg) (ev tap.Event, res uint64, replied bool, err error) {
	switch m.req {
	case reqGetFeatures:
		return 0, 0, true, b.reply(m.req, Features)
	case reqSetFeatures:
		if m.u64&^uint64(Features) != 0 {
			return 0, 0, false, fmt.Errorf("SET_FEATURES %#x: bits %#x not offered", m.u64, m.u64&^uint64(Features))
		}
		b.acked, b.ackedSet = m.u64, true
		b.vnetLen = 10
		if m.u64&(fVersion1|fNetMrgRxbuf) != 0 {
			b.vnetLen = 12
		}
		for q := range b.vq {
			b.vq[q].eventIdx = m.u64&fRingEventIdx != 0
			if m.u64&fProtocol == 0 {
				// Without protocol features rings are enabled
				// as soon as they start.
				b.vq[q].enabled = true
			}
		}
		logging.Debugf("vhost-user: features %#x", m.u64)
	case reqGetProtocolFeatures:
		return 0, 0, true, b.reply(m.req, ProtocolFeatures)
	case reqSetProtocolFeatures:
		if m.u64&^uint64(ProtocolFeatures) != 0 {
			return 0, 0, false, fmt.Errorf("SET_PROTOCOL_FEATURES %#x: bits %#x not offered", m.u64, m.u64&^uint64(ProtocolFeatures))
		}
		b.proto = m.u64
	case reqSetOwner:
	case reqResetOwner:
		// Deprecated; the spec lets a back end ignore it.
	case reqSetMemTable:
		return 0, b.setMemTable(m), false, nil
	case reqSetVringNum:
		r := &b.vq[m.index]
		if m.num == 0 || m.num > maxQueueSize || m.num&(m.num-1) != 0 {
			b.logOnce(logBadSize, "vhost-user: queue %d: size %d refused (a power of 2 up to %d)", m.index, m.num, maxQueueSize)
			r.num, r.bad = 0, true
			r.desc, r.avail, r.used = nil, nil, nil
			return 0, 1, false, nil
		}
		r.num, r.bad = m.num, false
		return 0, b.resolveRing(int(m.index)), false, nil
	case reqSetVringAddr:
		r := &b.vq[m.index]
		r.descAddr, r.availAddr, r.usedAddr, r.addrSet = m.addr.desc, m.addr.avail, m.addr.used, true
		res := b.resolveRing(int(m.index))
		if r.used != nil {
			// Where the used ring stands (after a reconnect it is
			// not 0): from the ring itself, as the C original.
			r.usedIdx = binary.LittleEndian.Uint16(r.used[2:])
			r.pubUsed = r.usedIdx
		}
		return 0, res, false, nil
	case reqSetVringBase:
		if m.num > 0xffff {
			return 0, 1, false, nil
		}
		b.vq[m.index].lastAvail = uint16(m.num)
	case reqGetVringBase:
		r := &b.vq[m.index]
		base := r.lastAvail
		b.stopRing(int(m.index), false)
		var p [8]byte
		binary.NativeEndian.PutUint32(p[0:], m.index)
		binary.NativeEndian.PutUint32(p[4:], uint32(base))
		return 0, 0, true, b.replyBytes(m.req, p[:])
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		if m.req == reqSetVringKick && b.nfds == 0 {
			return 0, 0, false, errors.New("SET_VRING_KICK without a descriptor (polling) is not supported")
		}
		fd := -1
		if b.nfds == 1 {
			fd = b.takeFD(0)
		}
		return b.setRingFD(m.req, int(m.index), fd)
	case reqGetQueueNum:
		return 0, 0, true, b.reply(m.req, 1)
	case reqSetVringEnable:
		if m.num > 1 {
			return 0, 1, false, nil
		}
		b.vq[m.index].enabled = m.num == 1
		if m.index == txQ && m.num == 1 && b.vq[txQ].ready() {
			ev = tap.EventFrames
		}
	case reqSendRARP:
		// After a migration, for guests without GUEST_ANNOUNCE: the
		// engine announces itself at EventUp anyway.
	case reqGetMaxMemSlots:
		return 0, 0, true, b.reply(m.req, maxRegions)
	case reqSetStatus:
		b.status = m.u64
	case reqGetStatus:
		return 0, 0, true, b.reply(m.req, b.status)
	default:
		return 0, 0, false, fmt.Errorf("%s: not supported", reqName(m.req))
	}
	return ev, 0, false, nil
}

// setMemTable replaces the guest memory with the regions of m, mapped from
// the message's descriptors (closed afterwards), and re-resolves the
// rings. Returns the REPLY_ACK value: 1 if a region cannot be mapped (the
// table is then empty and no ring is served).
func (b *Backend) setMemTable(m *msg) uint64 {
	b.mem.unmap()
	for i := 0; i < m.nregions; i++ {
		r, err := mapRegion(b.fds[i], m.regions[i])
		if err != nil {
			logging.Warnf("vhost-user: %v", err)
			b.mem.unmap()
			b.resolveRing(rxQ)
			b.resolveRing(txQ)
			return 1
		}
		b.mem.r[b.mem.n] = r
		b.mem.n++
	}
	logging.Debugf("vhost-user: %d memory regions", m.nregions)
	var res uint64
	for q := range b.vq {
		res |= b.resolveRing(q)
	}
	return res
}

// resolveRing translates ring q's addresses in the current memory. Returns
// 1 (and logs once) if they do not fit it, 0 otherwise.
func (b *Backend) resolveRing(q int) uint64 {
	if why := b.vq[q].resolve(&b.mem); why != "" {
		if b.mem.n > 0 {
			b.logOnce(logBadRing, "vhost-user: queue %d: %s", q, why)
			return 1
		}
	}
	return 0
}

// setRingFD replaces the kick, call or err descriptor of ring q with fd
// (-1: none). A kick starts the ring (and is watched); a call is
// signalled at once, which unsticks a guest that waited for an interrupt
// while the back end was away.
func (b *Backend) setRingFD(req uint32, q int, fd int) (tap.Event, uint64, bool, error) {
	r := &b.vq[q]
	switch req {
	case reqSetVringKick:
		if r.kick >= 0 {
			if b.w != nil {
				b.w.Unwatch(r.kick)
			}
			unix.Close(r.kick)
		}
		r.kick = fd
		if b.w != nil {
			if err := b.w.Watch(fd, unix.EPOLLIN, uint32(idxKick+q)); err != nil {
				return 0, 0, false, fmt.Errorf("queue %d kick: %w", q, err)
			}
		}
		r.started = true
		r.sigValid = false
		if b.ackedSet && b.acked&fProtocol == 0 {
			r.enabled = true
		}
		if r.ready() {
			b.kicksFor(q)
		}
		if q == txQ && r.ready() && r.enabled {
			return tap.EventFrames, 0, false, nil
		}
	case reqSetVringCall:
		if r.call >= 0 {
			unix.Close(r.call)
		}
		r.call = fd
		b.signal(q)
	case reqSetVringErr:
		if r.errFD >= 0 {
			unix.Close(r.errFD)
		}
		r.errFD = fd
	}
	return 0, 0, false, nil
}

// kicksFor sets the kick suppression a freshly started ring wants: TX
// kicks always, RX kicks only while starved.
func (b *Backend) kicksFor(q int) {
	if q == txQ {
		b.vq[q].wantKicks(true)
	} else {
		b.vq[q].wantKicks(b.rx.refused)
	}
}

// stopRing stops ring q (GET_VRING_BASE, disconnect): not started, its
// addresses forgotten, its kick and call descriptors closed; the err
// descriptor too if all, as at the end of a connection.
func (b *Backend) stopRing(q int, all bool) {
	r := &b.vq[q]
	if r.kick >= 0 {
		if b.w != nil {
			b.w.Unwatch(r.kick)
		}
		unix.Close(r.kick)
		r.kick = -1
	}
	if r.call >= 0 {
		unix.Close(r.call)
		r.call = -1
	}
	if all && r.errFD >= 0 {
		unix.Close(r.errFD)
		r.errFD = -1
	}
	num, enabled, eventIdx := r.num, r.enabled, r.eventIdx
	r.resetState()
	if !all {
		r.num, r.enabled, r.eventIdx = num, enabled, eventIdx
	}
}

// checkUp reports EventUp when the RX ring has just come into service
// (the guest's driver started the device: announce ourselves to it).
func (b *Backend) checkUp() tap.Event {
	up := b.rxUp()
	was := b.up
	b.up = up
	if up && !was {
		logging.Infof("vhost-user: guest rings up")
		return tap.EventUp
	}
	return 0
}

// rxUp reports whether frames can go to the guest.
func (b *Backend) rxUp() bool {
	r := &b.vq[rxQ]
	return b.conn >= 0 && r.ready() && r.enabled
}

var _ = allow.Syscall(allow.Passt, "sendmsg", "vhostuser.Backend.replyBytes: replies to the front end's requests")

// reply sends the u64 reply v to request req.
func (b *Backend) reply(req uint32, v uint64) error {
	var p [8]byte
	binary.NativeEndian.PutUint64(p[:], v)
	return b.replyBytes(req, p[:])
}

// replyBytes sends reply payload p (8 bytes) to request req: flags exactly
// version 1 | REPLY, as qemu checks.
func (b *Backend) replyBytes(req uint32, p []byte) error {
	binary.NativeEndian.PutUint32(b.rep[0:], req)
	binary.NativeEndian.PutUint32(b.rep[4:], flagVersion|flagReply)
	binary.NativeEndian.PutUint32(b.rep[8:], uint32(len(p)))
	copy(b.rep[hdrLen:], p)
	b.repIv.Base = &b.rep[0]
	b.repIv.SetLen(hdrLen + len(p))
	r, e := sys.Sendmsg(b.conn, &b.repMh, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
	if e != 0 {
		return fmt.Errorf("reply to %s: %w", reqName(req), e)
	}
	if r != hdrLen+len(p) {
		return fmt.Errorf("reply to %s: short write", reqName(req))
	}
	return nil
}

var _ = allow.Syscall(allow.Passt, "write", "vhostuser.Backend.signal: interrupts to the guest through the call eventfd of a ring, once per batch")

// signal writes 1 to ring q's call eventfd, if it has one. An eventfd
// write fails only when its counter would overflow (the guest took no
// interrupt for 2^64 - 1 of them): nothing is lost then.
func (b *Backend) signal(q int) {
	fd := b.vq[q].call
	if fd < 0 {
		return
	}
	one := [8]byte{1}
	unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&one[0])), 8)
	b.Stats.Interrupts++
}

var _ = allow.Syscall(allow.Passt, "read", "vhostuser.Backend.drainKick: draining a ring's kick eventfd")

// drainKick reads ring q's kick eventfd to zero (an eventfd read returns
// and resets the whole counter).
func (b *Backend) drainKick(q int) {
	fd := b.vq[q].kick
	if fd < 0 {
		return
	}
	var v [8]byte
	unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&v[0])), 8)
	b.Stats.Kicks++
}

// Kinds of guest errors, each logged once per connection.
const (
	logBadChain uint32 = 1 << iota
	logBrokenRing
	logBadSize
	logBadRing
	logBadFrame
	logNoBuffers
	logTooBig
	logGSO
)

// logOnce logs a warning of kind at most once per connection.
func (b *Backend) logOnce(kind uint32, format string, args ...any) {
	if b.logged&kind != 0 {
		return
	}
	b.logged |= kind
	logging.Warnf(format, args...)
}

// badChain counts and logs (once) the bad chain c of ring q, and gives it
// back to the guest unused if its head is valid.
func (b *Backend) badChain(q int, c *chain) {
	b.Stats.BadChains++
	b.logOnce(logBadChain, "vhost-user: queue %d: bad descriptor chain (%s): dropped (logged once)", q, c.why)
	if c.headOK {
		b.vq[q].push(c.head, 0)
	}
}

// brokenRing stops serving ring q, whose avail index is nonsense, until
// the front end configures it again.
func (b *Backend) brokenRing(q int) {
	b.Stats.BrokenRings++
	b.vq[q].bad = true
	b.logOnce(logBrokenRing, "vhost-user: queue %d: avail index runs ahead of the ring: queue stopped (logged once)", q)
}
