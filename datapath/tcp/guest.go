// The guest side: segments from the guest, grouped in runs of one flow,
// become connects, host socket writes (one sendmsg per run), discards of
// acknowledged host data, and ACKs back to the guest (one per run).

package tcp

import (
	"errors"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/datapath/flow"
	"gopasst/datapath/header"
	"gopasst/datapath/logging"
	"gopasst/datapath/loop"
	"gopasst/datapath/nat"
	"gopasst/datapath/packet"
	"gopasst/datapath/sys"
	"gopasst/isolation/allow"
)

// FromGuest handles the guest's TCP packets of one batch, in arrival
// order. Consecutive packets of one connection form a run, handled with
// one flow lookup, one write to the host socket and one ACK.
//
// pkts: validated TCP packets (demux filled ports and offsets); the frames
// must stay valid until FromGuest returns.
func (h *Handler) FromGuest(pkts []packet.Packet) {
	for i := 0; i < len(pkts); {
		j := i + 1
		for j < len(pkts) && j-i < maxIov && sameFlow(&pkts[i], &pkts[j]) {
			j++
		}
		h.run(pkts[i:j])
		i = j
	}
}

// sameFlow reports whether a and b belong to the same connection.
func sameFlow(a, b *packet.Packet) bool {
	return a.SrcPort == b.SrcPort && a.DstPort == b.DstPort && a.Src == b.Src && a.Dst == b.Dst
}

// run handles a run of packets of one tuple.
func (h *Handler) run(pkts []packet.Packet) {
	p := &pkts[0]
	h.key = flow.Key{Proto: header.ProtoTCP, Src: p.Src.As16(), Dst: p.Dst.As16(), SrcPort: p.SrcPort, DstPort: p.DstPort}
	i, ok := h.ft.Lookup(&h.key)
	if ok && h.ft.Kind(i) != flow.TCP {
		return
	}
	if !ok {
		// Only a SYN without ACK opens a connection; anything else gets
		// a reset (once per run).
		k := 0
		for ; k < len(pkts); k++ {
			if header.TCP(pkts[k].L4Bytes()).Flags()&(flagSYN|flagACK|flagRST) == flagSYN {
				break
			}
		}
		if k > 0 {
			h.rstUnknown(&pkts[0])
		}
		if k == len(pkts) {
			return
		}
		if i, ok = h.open(&pkts[k]); !ok {
			return
		}
		pkts = pkts[k+1:]
	}
	c := &h.conns[i]
	if c.flags&fClosed != 0 {
		return
	}
	c.flags |= fSeen | fActive
	for k := range pkts {
		if c.events&established != 0 {
			h.segments(i, pkts[k:])
			return
		}
		t := header.TCP(pkts[k].L4Bytes())
		fl := t.Flags()
		if fl&flagRST != 0 {
			h.closeConn(i, true)
			return
		}
		switch {
		case c.events&tapSynRcvd != 0:
			// connect() under way: SYN repeats wait for its outcome.
		case c.events&tapSynAckSent != 0:
			if fl&(flagSYN|flagACK) == flagSYN {
				// Our SYN+ACK was lost: send it again, same ISN.
				h.ctrlSeq(i, flagSYN|flagACK, c.seqToTap-1)
			} else if fl&(flagSYN|flagACK) == flagACK && t.Ack() == c.seqToTap {
				h.establish(i)
				h.segments(i, pkts[k:])
				return
			}
		case c.events&sockAccepted != 0:
			if fl&(flagSYN|flagACK) == flagSYN|flagACK && fl&flagFIN == 0 && t.Ack() == c.seqToTap {
				h.synAckFromGuest(i, &pkts[k], t)
				if k+1 < len(pkts) {
					h.segments(i, pkts[k+1:])
				}
				return
			}
		}
	}
}

// unicast reports whether a is usable as a TCP endpoint.
func unicast(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() && !(a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}))
}

// A guest SYN opens a host socket after the filter is in.
var (
	_ = allow.InetSocket(allow.Both, "tcp: the host socket of each outbound connection (Handler.open)")
	_ = allow.Syscall(allow.Both, "setsockopt", "tcp: SO_BINDTODEVICE (--outbound-if) on a new connection's socket (bindOutbound)")
	_ = allow.Syscall(allow.Both, "bind", "tcp: the -o source address of a new connection's socket (bindOutbound)")
	_ = allow.Syscall(allow.Both, "close", "tcp: a socket whose connection could not be set up (Handler.open)")
)

// open starts an outbound connection for the guest's SYN p: a non-blocking
// connect() from the host to the mapped destination. The guest sees a
// SYN+ACK only once the connect succeeds, and a reset if it fails.
//
// p: the SYN. Returns the new connection and true, or false if the SYN was
// dropped or refused.
func (h *Handler) open(p *packet.Packet) (flow.Index, bool) {
	t := header.TCP(p.L4Bytes())
	if p.SrcPort == 0 || p.DstPort == 0 || !unicast(p.Dst) || !unicast(p.Src) || t.PayloadLen() != 0 {
		return flow.None, false
	}
	ini := nat.Side{Pif: nat.PifTap, Src: p.Src, Dst: p.Dst, SrcPort: p.SrcPort, DstPort: p.DstPort}
	tgt := nat.Target(h.cfg, h.g, header.ProtoTCP, &ini, nil)
	if tgt.Pif != nat.PifHost {
		return flow.None, false
	}
	dst := tgt.Dst
	opts, _ := header.ParseTCPOptions(t.Options()) // what was found before a bad option still counts
	// The slot first: a full table costs no system call.
	key := flow.Key{Proto: header.ProtoTCP, Src: p.Src.As16(), Dst: p.Dst.As16(), SrcPort: p.SrcPort, DstPort: p.DstPort}
	i, err := h.alloc(&key)
	if errors.Is(err, flow.ErrFull) {
		// RST+ACK, as to a closed port, where the C original drops
		// the SYN: the guest's connect() fails at once with
		// ECONNREFUSED instead of retrying for two minutes against a
		// table that may stay full, and its application can back off
		// or report. Once a slot frees, the next SYN gets through.
		h.rstUnknown(p)
		return flow.None, false
	}
	if err != nil {
		logging.Debugf("tcp: %v", err)
		return flow.None, false
	}
	af := unix.AF_INET
	if dst.Is6() {
		af = unix.AF_INET6
	}
	fd, err := unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
			h.Stats.NoFDs++
			h.nofd.Refuse(h.l.Now(), h.ft)
		} else {
			logging.Debugf("tcp: socket for %v:%d: %v", dst, p.DstPort, err)
		}
		h.release(i)
		h.rstUnknown(p)
		return flow.None, false
	}
	h.nofd.Admitted()
	mss := int(opts.MSS)
	if mss == 0 {
		mss = mssDefault
	}
	if p.V6 {
		mss = min(mss, mssMax6)
	} else {
		mss = min(mss, mssMax4)
	}
	sys.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if mss <= maxSegOpt {
		// Above the kernel's limit the call fails with EINVAL (a guest
		// on a 65520-byte link announces 65480): one system call per
		// connection saved, and the socket's MSS is the route's either
		// way.
		sys.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss)
	}
	if err := bindOutbound(fd, &tgt); err != nil {
		logging.Debugf("tcp: %v", err)
		unix.Close(fd)
		h.release(i)
		h.rstUnknown(p)
		return flow.None, false
	}
	c := &h.conns[i]
	c.fd = int32(fd)
	c.v6 = p.V6
	c.seqInitFromTap = t.Seq()
	c.seqFromTap = t.Seq() + 1
	c.seqAckToTap = c.seqFromTap
	isn := h.isnKey.isn(&key, h.l.Now())
	c.seqToTap, c.seqAckFromTap, c.seqMax = isn, isn, isn
	c.wndRaw = t.Window()
	c.wndFromTap = uint32(t.Window()) // unscaled in a SYN
	c.mss = uint16(mss)
	if opts.WS >= 0 {
		c.flags |= fWS
		c.wsFromTap = uint8(opts.WS)
		c.wsToTap = ourWS
	}
	c.events = tapSynRcvd
	h.Stats.Opened++

	var sa4 unix.RawSockaddrInet4
	var sa6 unix.RawSockaddrInet6
	sa, salen := unsafe.Pointer(&sa4), unsafe.Sizeof(sa4)
	if af == unix.AF_INET {
		sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: dst.As4()}
		putPort(&sa4.Port, p.DstPort)
	} else {
		sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: dst.As16(), Scope_id: tgt.Scope}
		putPort(&sa6.Port, p.DstPort)
		sa, salen = unsafe.Pointer(&sa6), unsafe.Sizeof(sa6)
	}
	e := sys.Connect(fd, sa, salen)
	if e == unix.EINPROGRESS && dst.IsLoopback() {
		// Over loopback the handshake has run inside connect() already
		// (softirq on the way out), though it still says EINPROGRESS:
		// asking again saves a loop turn per connection (TCP_CRR).
		switch e2 := sys.Connect(fd, sa, salen); e2 {
		case unix.EISCONN:
			e = 0
		case unix.EALREADY, unix.EINPROGRESS:
		default:
			e = e2
		}
	}
	switch e {
	case 0:
		if err := h.setEpoll(i, evData); err != nil {
			h.reset(i)
			return flow.None, false
		}
		h.connected(i)
	case unix.EINPROGRESS:
		if err := h.setEpoll(i, unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET); err != nil {
			h.reset(i)
			return flow.None, false
		}
	default:
		logging.Debugf("tcp: connect to %v:%d: %v", dst, p.DstPort, e)
		h.refuse(i)
		return flow.None, false
	}
	return i, true
}

// bindOutbound binds a new host socket to the source address and device
// its target side names (-o, --outbound-if), if any: the port is the
// kernel's choice.
func bindOutbound(fd int, tgt *nat.Side) error {
	if tgt.Dev != "" {
		if err := unix.BindToDevice(fd, tgt.Dev); err != nil {
			return err
		}
	}
	if tgt.Src.IsValid() && !tgt.Src.IsUnspecified() {
		if tgt.Src.Is4() {
			return unix.Bind(fd, &unix.SockaddrInet4{Addr: tgt.Src.As4()})
		}
		return unix.Bind(fd, &unix.SockaddrInet6{Addr: tgt.Src.As16()})
	}
	return nil
}

// refuse answers the guest's SYN of connection i with a reset (the host
// refused or could not reach the destination) and closes it.
func (h *Handler) refuse(i flow.Index) {
	h.Stats.Refused++
	h.ctrl(i, flagRST|flagACK)
	h.closeConn(i, false)
}

// connected sends the SYN+ACK of outbound connection i once the host's
// connect() has succeeded, and arms the handshake timer.
func (h *Handler) connected(i flow.Index) {
	c := &h.conns[i]
	c.events = tapSynAckSent
	h.updateWindow(i)
	if c.flags&fWantOut != 0 {
		c.flags &^= fWantOut
	}
	h.setEpoll(i, evData)
	h.ctrlSeq(i, flagSYN|flagACK, c.seqToTap)
	c.seqToTap++
	c.seqMax, c.seqAckFromTap = c.seqToTap, c.seqToTap
	h.l.Timers().Set(int32(i), h.l.Now()+rtoInit, h.timerFn)
}

// establish completes an outbound handshake: the guest acknowledged our
// SYN+ACK.
func (h *Handler) establish(i flow.Index) {
	c := &h.conns[i]
	c.events = established
	c.retries = 0
	h.l.Timers().Cancel(int32(i))
	c.flags |= fHostData
}

// synAckFromGuest completes an inbound handshake: the guest answered our
// SYN with SYN+ACK.
func (h *Handler) synAckFromGuest(i flow.Index, p *packet.Packet, t header.TCP) {
	c := &h.conns[i]
	opts, _ := header.ParseTCPOptions(t.Options())
	c.seqFromTap = t.Seq() + 1
	c.seqAckToTap = c.seqFromTap
	c.seqInitFromTap = c.seqFromTap
	c.seqAckFromTap = c.seqToTap
	c.wndRaw = t.Window()
	c.wndFromTap = uint32(t.Window())
	if opts.WS >= 0 {
		c.flags |= fWS
		c.wsFromTap = uint8(opts.WS)
	} else {
		c.wsToTap = 0
	}
	mss := int(opts.MSS)
	if mss == 0 {
		mss = mssDefault
	}
	c.mss = uint16(min(mss, h.maxPayload(c.v6)))
	c.events = established
	c.retries = 0
	h.l.Timers().Cancel(int32(i))
	// Nothing was written since our SYN asked for the window: the
	// answer then still holds, unless it was short.
	h.windowAfter(i, 0)
	c.flags |= fHostData
	if h.sendData(i) == 0 {
		h.ctrl(i, flagACK)
	}
}

// maxPayload returns the largest payload a frame to the guest can carry.
func (h *Handler) maxPayload(v6 bool) int {
	mtu := h.cfg.MTU
	if mtu <= 0 || mtu > config.MaxMTU {
		mtu = config.DefaultMTU
	}
	if v6 {
		return min(mtu-60, mssMax6)
	}
	return min(mtu-40, mssMax4)
}

// segments handles a run of segments of established connection i: RST,
// keepalives, ACKs of host data, in-order data (reordered within the run),
// FIN, and the ACK back to the guest.
func (h *Handler) segments(i flow.Index, pkts []packet.Packet) {
	c := &h.conns[i]
	var (
		haveAck, dup, forceAck bool
		ack                    uint32
		wnd                    uint16
	)
	for k := range pkts {
		t := header.TCP(pkts[k].L4Bytes())
		fl := t.Flags()
		if fl&flagRST != 0 {
			// RFC 5961 §3.2: only a reset in our receive window counts.
			if d := t.Seq() - c.seqFromTap; d <= maxWnd || -d <= 65536 {
				h.closeConn(i, true)
				return
			}
			continue
		}
		if fl&flagSYN != 0 {
			// A repeated SYN+ACK (our ACK was lost): ACK again.
			forceAck = true
			continue
		}
		if fl&flagACK == 0 {
			continue
		}
		a := t.Ack()
		plen := t.PayloadLen()
		if !haveAck || seqGE(a, ack) {
			ack, wnd, haveAck = a, t.Window(), true
		}
		if plen == 0 && fl&flagFIN == 0 && a == c.seqAckFromTap && t.Window() == c.wndRaw {
			dup = true
		}
		if plen <= 1 && fl&flagFIN == 0 && t.Seq() == c.seqFromTap-1 {
			// Keepalive or zero-window probe: answer it, and let the
			// host socket probe its peer too (tcp.md §4).
			forceAck = true
			if c.flags&fKeepalive == 0 {
				c.flags |= fKeepalive
				sys.SetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
			}
		}
	}

	// In-order data, reordered within the run: each pass takes every
	// segment that starts at or before the next expected byte; a segment
	// past it waits for a later pass.
	n, total := 0, 0
	next := c.seqFromTap
	runEnd := next // end of the furthest data in the run
	gap, fin := false, false
	if c.events&tapFinRcvd == 0 {
		for pass := 0; pass < len(pkts); pass++ {
			progress := false
			gap = false
			for k := range pkts {
				t := header.TCP(pkts[k].L4Bytes())
				if t.Flags()&(flagSYN|flagRST|flagACK) != flagACK {
					continue
				}
				pl := t.Payload()
				if len(pl) == 0 {
					continue
				}
				seq := t.Seq()
				end := seq + uint32(len(pl))
				if seqGT(end, runEnd) {
					runEnd = end
				}
				if seqLE(end, next) {
					// Already written: a retransmission, the guest
					// missed our ACK. Send it again.
					forceAck = true
					continue
				}
				if seqGT(seq, next) {
					gap = true
					continue
				}
				pl = pl[next-seq:]
				if h.Payload != nil {
					if n+2 > maxIov {
						// No room for the pieces: as a gap,
						// the guest sends the rest again.
						gap = true
						break
					}
					n += h.Payload.PayloadIovecs(pl, h.iov[n:n+2])
				} else {
					iov := &h.iov[n]
					iov.Base = unsafe.SliceData(pl)
					iov.SetLen(len(pl))
					n++
				}
				total += len(pl)
				next = end
				progress = true
			}
			if !gap || !progress {
				break
			}
		}
		if !gap {
			for k := range pkts {
				t := header.TCP(pkts[k].L4Bytes())
				if t.Flags()&(flagFIN|flagACK|flagSYN|flagRST) == flagFIN|flagACK &&
					t.Seq()+uint32(t.PayloadLen()) == next {
					fin = true
				}
			}
		} else {
			forceAck = true // duplicate ACK: the guest retransmits the gap
		}
	}

	wrote, written := false, 0
	if n > 0 {
		h.msg.Iov = &h.iov[0]
		h.msg.Iovlen = uint64(n)
		w, e := sys.Sendmsg(int(c.fd), &h.msg, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if e != 0 && e != unix.EAGAIN {
			if e == unix.EPIPE {
				// The peer is gone: ACK what we had, then reset.
				c.seqFromTap = next
			}
			logging.Debugf("tcp: flow %d: write: %v", i, e)
			h.reset(i)
			return
		}
		c.seqFromTap += uint32(w)
		h.Stats.BytesIn += uint64(w)
		wrote, written = true, w
		if w < total {
			// The socket took less than we offered (tcp.md §4): the
			// rest is dropped unacknowledged; once the socket has room
			// again the guest gets a window update and duplicate ACKs
			// that make it retransmit at once, not after an RTO.
			h.Stats.ShortWrites++
			c.flags |= fDropped
			fin = false
		}
	}
	if gap || (n > 0 && c.seqFromTap != next) {
		h.markLost(i, runEnd)
	}
	if fin {
		if e := sys.ShutdownWrite(int(c.fd)); e != 0 {
			h.reset(i)
			return
		}
		c.seqFromTap++
		c.events |= tapFinRcvd | sockFinSent
		forceAck = true
	}

	if haveAck {
		h.ackFromGuest(i, ack, wnd, dup)
		if c.flags&fClosed != 0 {
			return
		}
	}

	changed := false
	if fin || c.flags&fDropped != 0 {
		changed = h.updateWindow(i)
	} else if wrote {
		changed = h.windowAfter(i, uint32(written))
	}
	due := forceAck || changed || c.seqFromTap != c.seqAckToTap
	sent := 0
	if c.flags&fHostData != 0 {
		sent = h.sendData(i)
	}
	acked := false
	if due && sent == 0 && c.flags&fClosed == 0 {
		h.ctrl(i, flagACK)
		acked = true
	}
	if c.flags&fLost != 0 && c.flags&(fClosed|fWantOut) == 0 {
		h.dupAcks(i, acked)
	}
	h.maybeClose(i)
}

// markLost records that guest data of connection i up to end was dropped
// unwritten (a short write, or segments past a gap), so that duplicate
// ACKs keep asking for it until the guest has sent it again (dupAcks).
func (h *Handler) markLost(i flow.Index, end uint32) {
	c := &h.conns[i]
	if !seqGT(end, c.seqFromTap) {
		return
	}
	if c.flags&fLost == 0 {
		c.flags |= fLost
		c.dropEnd = end
		c.dupAckSeq = c.seqFromTap - 1 // no burst yet at this ACK number
	} else if seqGT(end, c.dropEnd) {
		c.dropEnd = end
	}
}

// dupAcks sends connection i's ACK followed by three duplicates, once per
// ACK number, while guest data we dropped is still missing (fLost). We
// keep no out-of-order data and offer no SACK, so the guest runs NewReno
// (RFC 6582): after a drop, every segment it sent past the hole is lost
// too. Its fast recovery repairs the segments sent before it entered
// recovery, one per partial ACK; the ACK that reaches its recovery point
// ends recovery, and the segments it sent during recovery (which we also
// dropped) would then wait for its retransmission timeout (200 ms or
// more, then doubled), since nothing else makes it send duplicate-ACK
// triggers. Three duplicates of every ACK short of the dropped data start
// a new fast retransmit at once instead; during recovery they only add to
// its duplicate count. Not while EPOLLOUT is pending: the socket has no
// room for the retransmission yet, and writable sends the burst.
//
// i: the connection; acked: the ACK itself was just sent (then only the
// three duplicates follow; otherwise the first of four pure ACKs tells
// the guest about our data frames' sequence, and the next three are the
// duplicates, RFC 5681 §2's definition).
func (h *Handler) dupAcks(i flow.Index, acked bool) {
	c := &h.conns[i]
	if !seqGT(c.dropEnd, c.seqFromTap) {
		c.flags &^= fLost
		return
	}
	if c.dupAckSeq == c.seqFromTap {
		return
	}
	c.dupAckSeq = c.seqFromTap
	if !acked {
		h.ctrl(i, flagACK)
	}
	for k := 0; k < 3; k++ {
		h.ctrl(i, flagACK)
	}
	h.Stats.DupAcks += 3
}

// ackFromGuest processes the highest ACK of a run: acknowledged host data
// is dropped from the socket (MSG_TRUNC), a duplicate ACK rewinds to the
// guest's ACK and resends at once (go-back-N, once per ACK value), and the
// guest's window is taken.
//
// i: the connection; ack, wnd: the ACK number and raw window of the
// latest ACK; dup: a pure duplicate ACK was seen in the run.
func (h *Handler) ackFromGuest(i flow.Index, ack uint32, wnd uint16, dup bool) {
	c := &h.conns[i]
	scaled := uint32(wnd) << c.wsFromTap
	if seqGT(ack, c.seqAckFromTap) && seqLE(ack, c.seqMax) {
		n := ack - c.seqAckFromTap
		finAcked := c.events&tapFinSent != 0 && ack == c.seqMax
		if finAcked {
			n--
		}
		if n > 0 {
			r, e := sys.Discard(int(c.fd), int(n))
			if e != 0 || r != int(n) {
				logging.Debugf("tcp: flow %d: discarding %d acknowledged bytes: %d, %v", i, n, r, e)
				h.reset(i)
				return
			}
		}
		c.seqAckFromTap = ack
		if seqGT(ack, c.seqToTap) {
			// Acknowledged past a rewind: the peek offset clamped at 0.
			c.seqToTap = ack
		}
		c.retries = 0
		c.flags &^= fRewound | fPersist
		if finAcked {
			c.events |= tapFinAcked
		}
		if ack == c.seqMax {
			h.l.Timers().Cancel(int32(i))
		} else {
			h.armRTO(i)
		}
	} else if dup && ack == c.seqAckFromTap && seqGT(c.seqMax, ack) && c.flags&fRewound == 0 {
		h.Stats.FastRetrans++
		h.rewind(i)
		c.flags |= fRewound
	}
	c.wndRaw = wnd
	if scaled == 0 && seqGT(c.seqToTap, c.seqAckFromTap) {
		// The guest closed its window below data we sent (memory
		// pressure, tcp.md §8): it dropped that data; send it again
		// when the window opens, or as a probe on the timer.
		h.rewind(i)
	}
	c.wndFromTap = scaled
	if scaled == 0 && c.flags&fHostData != 0 {
		if _, armed := h.l.Timers().Armed(int32(i)); !armed {
			c.flags |= fPersist
			h.armRTO(i)
		}
	}
}

// rewind goes back to the guest's last ACK: everything after it is sent
// again (the peek offset returns to the head of the receive queue).
func (h *Handler) rewind(i flow.Index) {
	c := &h.conns[i]
	if c.seqToTap == c.seqAckFromTap {
		return
	}
	c.seqToTap = c.seqAckFromTap
	if c.flags&fPeekOff != 0 {
		// Without fPeekOff the kernel peeks from the head already.
		sys.SetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0)
	}
	c.flags |= fHostData
}

// updateWindow recomputes the window offered to the guest from the host
// socket's free send buffer as the kernel accounts it (SO_MEMINFO), so
// that whatever the guest sends within it, the socket takes (tcp.md §5),
// and subscribes EPOLLOUT when the socket is short of space, so that the
// guest hears as soon as there is room again.
//
// i: the connection. Returns whether the raw window field changed.
func (h *Handler) updateWindow(i flow.Index) bool {
	c := &h.conns[i]
	fd := int(c.fd)
	var free uint32
	c.sndFree, c.sndSince = 0, 0
	if e := sys.MemInfo(fd, &h.mi); e != 0 {
		free = initWnd
	} else {
		sndbuf := h.mi[unix.SK_MEMINFO_SNDBUF]
		queued := h.mi[unix.SK_MEMINFO_WMEM_QUEUED]
		if queued < sndbuf {
			free = sndbuf - queued
		}
		// The kernel takes a write while queued memory is below the
		// buffer size, skb overhead included: convert free memory to
		// payload bytes with the overhead the queue shows now.
		if free > 0 && queued > 0 {
			if outq, e := sys.OutQueue(fd); e == 0 && outq > 0 && uint32(outq) < queued {
				free = uint32(uint64(free) * uint64(outq) / uint64(queued))
			}
		}
		mss := uint32(h.mss4)
		if c.v6 {
			mss = uint32(h.mss6)
		}
		// Writable as tcp_poll() sees it: free >= queued / 2.
		if sndbuf <= queued || sndbuf-queued < queued/2 {
			// Short of space: poll() now marks the socket SOCK_NOSPACE,
			// so it reports EPOLLOUT once a third is free (and send
			// buffer autotuning may grow it). A window below a segment
			// would only make the guest wait for its persist timer.
			if free < mss {
				free = 0
			}
		} else if free < mss {
			// Room in the socket's eyes, but less than a segment:
			// offer one; a short write then grows the buffer.
			free = mss
		}
		notWritable := sndbuf <= queued || sndbuf-queued < queued/2
		if (notWritable || c.flags&fDropped != 0) && c.flags&fWantOut == 0 {
			// After a short write EPOLLOUT is wanted even if the
			// socket looks writable (a global memory limit refused
			// the write): then the event comes at once, with the
			// duplicate ACKs.
			c.flags |= fWantOut
			h.setEpoll(i, evData|unix.EPOLLOUT)
		}
		if !notWritable && c.flags&fDropped == 0 && free >= estMinSegs*mss {
			c.sndFree = free
		}
	}
	return h.setWindow(c, free)
}

// windowAfter is updateWindow after w more bytes went to connection i's
// socket, without asking the kernel when it need not: while the bytes
// written since the last SO_MEMINFO are at most a quarter of the room it
// showed (and that room was plenty: estMinSegs segments, the socket
// writable, nothing dropped), the window is that room less those bytes.
// The right edge offered (seqFromTap + window) then stays where the kernel
// put it, the guest always keeps three quarters of it, so it goes on
// sending (and we on asking) as long as it has data; the kernel's room
// only grows meanwhile, as the peer reads. Small writes (a request, a
// response: TCP_RR) cost no system call; bulk writes, a quarter of the
// buffer each, ask every time, as before.
//
// i: the connection; w: the bytes just written (0: none, the window is
// wanted again). Returns whether the raw window field changed.
func (h *Handler) windowAfter(i flow.Index, w uint32) bool {
	c := &h.conns[i]
	if c.sndFree == 0 || c.flags&(fWantOut|fDropped) != 0 || uint64(c.sndSince)+uint64(w) > uint64(c.sndFree/4) {
		return h.updateWindow(i)
	}
	c.sndSince += w
	return h.setWindow(c, c.sndFree-c.sndSince)
}

// setWindow sets the raw window field announced to connection c's guest
// for free bytes of room (at least the initial window before the
// handshake is complete, at most maxWnd). Returns whether it changed.
func (h *Handler) setWindow(c *conn, free uint32) bool {
	if c.events&established == 0 {
		free = max(free, initWnd)
	}
	free = min(free, maxWnd)
	raw := min(free>>c.wsToTap, 65535)
	changed := uint16(raw) != c.wndToTap
	c.wndToTap = uint16(raw)
	return changed
}

// evData is the epoll mask of a connection's socket once connected: data
// and the peer's FIN, edge-triggered: unacknowledged data stays readable,
// and level-triggered it would wake the loop for ever (tcp.md §8).
const evData = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

// setEpoll registers (or changes) the events of connection i's socket.
func (h *Handler) setEpoll(i flow.Index, ev uint32) error {
	c := &h.conns[i]
	if c.epoll == ev {
		return nil
	}
	r := loop.MakeRef(loop.KindTCP, int(c.fd), uint32(i))
	var err error
	if c.epoll == 0 {
		err = h.l.Add(int(c.fd), ev, r)
	} else {
		err = h.l.Mod(int(c.fd), ev, r)
	}
	if err == nil {
		c.epoll = ev
	}
	return err
}

// maybeClose closes connection i once both directions are finished: the
// guest's FIN was passed on and ours was acknowledged.
func (h *Handler) maybeClose(i flow.Index) {
	c := &h.conns[i]
	if c.flags&fClosed == 0 && c.events&(tapFinAcked|tapFinRcvd) == tapFinAcked|tapFinRcvd {
		h.closeConn(i, false)
	}
}
