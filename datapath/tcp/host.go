// The host side: events on connection sockets (connect completion, data
// and FIN from the peer, send space, errors), data to the guest peeked
// straight into frames, and the per-connection timer.

package tcp

import (
	"golang.org/x/sys/unix"

	"gopasst/datapath/flow"
	"gopasst/datapath/logging"
	"gopasst/datapath/loop"
	"gopasst/datapath/sys"
)

// sockEvent handles the epoll events of a connection's socket.
func (h *Handler) sockEvent(r loop.Ref, ev uint32) {
	i := flow.Index(r.Index())
	if int(i) >= len(h.conns) {
		return
	}
	c := &h.conns[i]
	if c.flags&fClosed != 0 || int(c.fd) != r.FD() {
		return
	}
	c.flags |= fActive
	if c.events&tapSynRcvd != 0 {
		// connect() finished, one way or the other.
		soErr, e := sys.GetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 || e != 0 || soErr != 0 {
			logging.Debugf("tcp: flow %d: connect: %v", i, unix.Errno(soErr))
			h.refuse(i)
			return
		}
		if ev&unix.EPOLLOUT != 0 {
			h.connected(i)
		}
		return
	}
	if ev&unix.EPOLLERR != 0 {
		if logging.Debugging() {
			soErr, _ := sys.GetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_ERROR)
			logging.Debugf("tcp: flow %d: socket error: %v", i, unix.Errno(soErr))
		}
		if ev&unix.EPOLLHUP != 0 {
			// Error and hang-up: the socket is closed already (a reset
			// from the peer, a timeout: tcp_done), so closing it sends
			// nothing, with or without SO_LINGER: the guest gets its
			// reset, the socket a plain close.
			h.resetDead(i)
			return
		}
		h.reset(i)
		return
	}
	if ev&unix.EPOLLOUT != 0 && c.flags&fWantOut != 0 {
		h.writable(i)
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		c.flags |= fHostData
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		c.events |= sockFinRcvd
	}
	if c.events&established == 0 {
		// Handshake with the guest under way: data waits in the socket;
		// a hang-up now means the peer is gone.
		if ev&unix.EPOLLHUP != 0 {
			h.reset(i)
		}
		return
	}
	if c.flags&fHostData != 0 {
		h.sendData(i)
	}
	h.maybeClose(i)
}

// Resume sends the host data that waits for the guest on every established
// connection, for when the guest back end refused buffers (a stream
// socket that was full) and takes frames again (tap.EventWritable): those
// connections stopped peeking, their data stays in the host sockets, and
// no host event would come for it.
func (h *Handler) Resume() {
	for _, i := range h.active {
		if c := &h.conns[i]; c.flags&(fClosed|fHostData) == fHostData && c.events&established != 0 {
			h.sendData(i)
		}
	}
}

// writable handles EPOLLOUT after the socket was short of space: the
// guest gets the window that opened and, if data was dropped, duplicate
// ACKs so that it retransmits at once (fast retransmit needs three).
func (h *Handler) writable(i flow.Index) {
	c := &h.conns[i]
	c.flags &^= fWantOut
	h.setEpoll(i, evData)
	changed := h.updateWindow(i)
	c.flags &^= fDropped
	if c.flags&fLost != 0 && c.dupAckSeq != c.seqFromTap && seqGT(c.dropEnd, c.seqFromTap) {
		h.dupAcks(i, false)
	} else if changed {
		h.ctrl(i, flagACK)
	}
}

// sendData sends host data to the guest as far as the guest's window
// allows: one recvmsg(MSG_PEEK) fills the payload areas of up to
// framesPerRead frames, then their headers are written. At the end of
// the peer's stream, with everything acknowledged, it sends our FIN.
//
// i: an established connection. Returns the number of frames queued.
func (h *Handler) sendData(i flow.Index) int {
	c := &h.conns[i]
	if c.events&established == 0 || c.flags&fClosed != 0 {
		return 0
	}
	k, ok := h.ft.Key(i, 0)
	if !ok {
		return 0
	}
	sent := 0
	hl := hdrLen(c.v6)
	mss := uint32(h.framePayload(c)) // payload per frame
	for {
		if c.events&tapFinSent != 0 && c.seqToTap == c.seqMax {
			c.flags &^= fHostData // everything, FIN included, is out
			return sent
		}
		inflight := c.seqToTap - c.seqAckFromTap
		if c.wndFromTap <= inflight {
			// Window full: the guest's next ACK brings us back.
			h.Stats.PeekWindowFull++
			if c.wndFromTap == 0 {
				if _, armed := h.l.Timers().Armed(int32(i)); !armed {
					c.flags |= fPersist
					h.armRTO(i)
				}
			}
			return sent
		}
		avail := c.wndFromTap - inflight
		if c.events&tapFinSent != 0 {
			// Rewound before our FIN: resend the data up to it only.
			avail = min(avail, c.seqMax-1-c.seqToTap)
		}
		nf := int((avail + mss - 1) / mss)
		nf = min(nf, framesPerRead)
		if nf == 0 {
			nf = 1
		}
		got := h.out.Reserve(h.bufs[:nf])
		if got == 0 {
			return sent
		}
		j := 0
		if h.peekOff && inflight > 0 && c.flags&fPeekOff == 0 {
			// The peek offset is turned on only once data is in
			// flight: until then a peek starts at the head of the
			// queue anyway, and a connection that never peeks with
			// data unacknowledged (request and response, one at a
			// time) makes one system call less.
			if e := sys.SetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_PEEK_OFF, int(inflight)); e != 0 {
				logging.Debugf("tcp: flow %d: SO_PEEK_OFF: %v", i, e)
				h.reset(i)
				return sent
			}
			c.flags |= fPeekOff
		}
		if !h.peekOff && inflight > 0 {
			// No SO_PEEK_OFF: bytes already sent land in a scratch
			// buffer in front of the frames.
			if inflight > maxScratchIov*scratchSize {
				h.reset(i)
				return sent
			}
			for left := int(inflight); left > 0; j++ {
				l := min(left, scratchSize)
				h.iov[j].Base = &h.scratch[0]
				h.iov[j].SetLen(l)
				left -= l
			}
		}
		want := uint32(0)
		for f := 0; f < got && want < avail; f++ {
			l := min(mss, avail-want)
			h.iov[j].Base = &h.bufs[f][hl]
			h.iov[j].SetLen(int(l))
			j++
			want += l
		}
		if want == 0 && c.events&tapFinSent == 0 {
			// Only a FIN could go: peek a byte to see whether the
			// stream ended.
			h.iov[j].Base = &h.bufs[0][hl]
			h.iov[j].SetLen(1)
			j++
		}
		h.msg.Iov = &h.iov[0]
		h.msg.Iovlen = uint64(j)
		r, e := sys.Recvmsg(int(c.fd), &h.msg, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		h.Stats.Peeks++
		if e == unix.EAGAIN {
			h.Stats.PeekDrained++
			c.flags &^= fHostData
			return sent
		}
		if e != 0 {
			logging.Debugf("tcp: flow %d: read: %v", i, e)
			h.reset(i)
			return sent
		}
		if !h.peekOff && inflight > 0 {
			r -= int(inflight)
			if r < 0 {
				r = 0
			}
		}
		if r == 0 {
			// End of the peer's stream, everything read: FIN to the
			// guest once all data is acknowledged (tcp.md §8: never
			// FIN with data unacknowledged).
			c.events |= sockFinRcvd
			if c.seqToTap != c.seqAckFromTap {
				return sent // keep fHostData: the ACK brings us back
			}
			c.flags &^= fHostData
			if c.events&tapFinSent == 0 || c.seqToTap == c.seqMax-1 {
				h.ctrl(i, flagFIN|flagACK)
				c.seqToTap++
				if seqGT(c.seqToTap, c.seqMax) {
					c.seqMax = c.seqToTap
				}
				c.events |= tapFinSent
				h.armRTO(i)
				sent++
			}
			return sent
		}
		if want == 0 {
			// Data where we only looked for the FIN: nothing to send now.
			return sent
		}
		// Fill in the headers of the frames the data landed in.
		s := segment{ack: c.seqFromTap, flags: flagACK, wnd: c.wndToTap, ws: -1}
		for off, f := 0, 0; off < r; f++ {
			s.plen = min(int(mss), r-off)
			s.seq = c.seqToTap + uint32(off)
			off += s.plen
			if off == r {
				s.flags |= flagPSH
			}
			h.commit(h.build(h.bufs[f], k, c.v6, &s), c.v6, s.plen, c.mss)
		}
		nfr := (r + int(mss) - 1) / int(mss)
		sent += nfr
		h.Stats.FramesOut += uint64(nfr)
		h.Stats.BytesOut += uint64(r)
		c.seqAckToTap = c.seqFromTap
		c.seqToTap += uint32(r)
		if seqGT(c.seqToTap, c.seqMax) {
			c.seqMax = c.seqToTap
		}
		if _, armed := h.l.Timers().Armed(int32(i)); !armed || c.flags&fPersist != 0 {
			c.flags &^= fPersist
			h.armRTO(i)
		}
		if uint32(r) < want {
			// Drained for now. Unless the peer's FIN is known (then the
			// next peek sees the end of the stream), wait for EPOLLIN.
			if c.events&sockFinRcvd == 0 {
				h.Stats.PeekDrained++
				c.flags &^= fHostData
				return sent
			}
		}
	}
}

// armRTO (re)arms connection i's timer for a retransmission timeout:
// 1 s (3 s after handshake retries) doubled per retry, at most 120 s.
func (h *Handler) armRTO(i flow.Index) {
	c := &h.conns[i]
	base := rtoInit
	if c.flags&fSynRetried != 0 {
		base = rtoSynBase
	}
	d := min(base<<min(c.retries, 10), rtoMax)
	h.l.Timers().Set(int32(i), h.l.Now()+d, h.timerFn)
}

// onTimer handles the expiry of connection id's timer: handshake
// retransmission, data retransmission (go-back-N from the guest's ACK), or
// a zero-window probe.
func (h *Handler) onTimer(id int32, now int64) {
	i := flow.Index(id)
	c := &h.conns[i]
	if c.flags&fClosed != 0 {
		return
	}
	switch {
	case c.events&(sockAccepted|tapSynAckSent) != 0:
		if c.retries >= maxSynRetries {
			logging.Debugf("tcp: flow %d: handshake timed out", i)
			h.reset(i)
			return
		}
		c.retries++
		c.flags |= fSynRetried
		if c.events&sockAccepted != 0 {
			h.ctrlSeq(i, flagSYN, c.seqToTap-1)
		} else {
			h.ctrlSeq(i, flagSYN|flagACK, c.seqToTap-1)
		}
		d := min(rtoInit<<c.retries, rtoMax)
		h.l.Timers().Set(id, now+d, h.timerFn)
	case c.events&established != 0:
		if c.flags&fPersist != 0 || (c.wndFromTap == 0 && c.seqMax == c.seqAckFromTap) {
			// Zero window, nothing in flight: probe with an old ACK;
			// the guest answers with its current window.
			if c.seqMax == c.seqAckFromTap && c.flags&fHostData != 0 {
				h.ctrlSeq(i, flagACK, c.seqToTap-1)
				c.retries = min(c.retries+1, 6)
				h.armRTO(i)
				return
			}
			c.flags &^= fPersist
		}
		if c.seqMax == c.seqAckFromTap {
			return
		}
		if c.retries >= maxRetries {
			logging.Debugf("tcp: flow %d: retransmissions exhausted", i)
			h.reset(i)
			return
		}
		c.retries++
		h.Stats.RTOs++
		h.rewind(i)
		if c.events&tapFinSent != 0 && c.seqToTap == c.seqMax-1 {
			// Only our FIN is unacknowledged.
			h.ctrlSeq(i, flagFIN|flagACK, c.seqToTap)
			c.seqToTap++
		} else {
			h.sendData(i)
		}
		h.armRTO(i)
	}
}
