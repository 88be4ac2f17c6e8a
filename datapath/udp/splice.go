// pasta's UDP loopback path: datagrams between a client on one side's
// loopback and a server on the other's, moved between two connected
// sockets in batches (recvmmsg into our buffers, sendmmsg out), never as
// frames.
//
// A flow starts with a datagram on a listener: from the host's loopback on
// a -u port (readListener finds it spliceable), or from the namespace's
// loopback on a -U port (readSpliceListener: those listeners only splice).
// Its two sockets are
//
//   - the reply socket, on the listener's side, bound to the very address
//     and port the client reached and connected to the client: the client
//     sees answers come from where it sent, and its later datagrams reach
//     this socket rather than the listener (a connected socket is the
//     kernel's better match);
//   - the target socket, on the other side, connected to the address
//     nat.Target chose: the namespace's address (or its loopback with
//     --host-lo-to-ns-lo) from the host, the host's same loopback address
//     from the namespace, bound there to the client's address and port.
//
// Datagrams the listener had queued before the reply socket existed still
// arrive on the listener and find the flow by its key (client, local
// address and port, with the side in the key's protocol byte: the two
// loopbacks have the same addresses). Flows time out as the tap path's do.

package udp

import (
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"

	"gopasst/batch"
	"gopasst/datapath/flow"
	"gopasst/datapath/header"
	"gopasst/datapath/logging"
	"gopasst/datapath/loop"
	"gopasst/datapath/nat"
	"gopasst/datapath/sys"
	"gopasst/isolation/allow"
)

// spliceFlow is a UDP flow of the loopback path, indexed by flow.Index.
type spliceFlow struct {
	fd   [2]int32 // reply socket (the client's side), target socket
	last int64    // loop time of the last datagram either way
	pos  int32    // index in Handler.sactive
	// via: fd[0] is the listener, lent (replySocket): not ours to close
	// or watch, and what goes back to the client names it (peer, pport;
	// via6: the listener is IPv6).
	via, via6 bool
	pport     uint16
	peer      [16]byte
}

// spliceMax is the largest UDP payload (65535 - 8 - 20).
const spliceMax = 65507

// spliceBufs are the buffers the loopback path reads datagrams into and
// sends them from, made with the first spliced flow.
type spliceBufs struct {
	bufs [][]byte
	msgs *batch.Msgs // recvmmsg, then the same headers for sendmmsg
}

// spliceProtoNS marks, in a flow key's protocol byte, a flow started in
// pasta's namespace (a -U listener): loopback addresses are the same on
// both sides, so the side must be part of the key.
const spliceProtoNS = header.ProtoUDP | 0x80

// bufs returns the loopback path's buffers, making them on first use.
func (h *Handler) spliceBufs() *spliceBufs {
	if h.sp == nil {
		sp := &spliceBufs{bufs: make([][]byte, recvBatch), msgs: batch.NewMsgs(recvBatch, 1)}
		for j := range sp.bufs {
			sp.bufs[j] = make([]byte, spliceMax)
		}
		h.sp = sp
		h.splices = make([]spliceFlow, h.ft.Cap())
	}
	return h.sp
}

// readSpliceListener handles the datagrams on a -U listener in pasta's
// namespace: all of them go to the loopback path (or are dropped).
func (h *Handler) readSpliceListener(ln *listener) {
	sp := h.spliceBufs()
	for round := 0; round < maxRounds; round++ {
		for j := 0; j < recvBatch; j++ {
			h.lrecv.SetBuf(j, sp.bufs[j])
			h.lrecv.Hdrs[j].Hdr.SetControllen(ctrlLen)
		}
		h.lrecv.ResetNames(recvBatch)
		m, e := sys.Recvmmsg(ln.fd, h.lrecv.Hdrs[:recvBatch], unix.MSG_DONTWAIT)
		if e != 0 || m == 0 {
			return
		}
		for j := 0; j < m; j++ {
			mh := &h.lrecv.Hdrs[j]
			if mh.Hdr.Flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
				h.Stats.SpliceDropped++
				continue
			}
			peer, pport, err := parseSockaddr(nameBytes(&h.lrecv.Names[j], mh.Hdr.Namelen))
			if err != nil {
				h.Stats.SpliceDropped++
				continue
			}
			cl := min(int(mh.Hdr.Controllen), ctrlLen)
			local, err := parsePktinfo(h.ctrl[j*ctrlLen : j*ctrlLen+cl])
			if err != nil {
				h.Stats.SpliceDropped++
				continue
			}
			h.spliceInbound(ln, peer, pport, local, sp.bufs[j][:mh.Len])
		}
		if m < recvBatch {
			return
		}
	}
}

var _ = allow.Syscall(allow.Pasta, "sendto", "udp: the first datagrams of a loopback flow, from its listener to its target socket (Handler.spliceInbound)")

// spliceInbound sends payload, a datagram from peer:pport that reached
// local on listener ln, to the other side of its loopback flow, making the
// flow if it has none. What nat.Target refuses is dropped.
func (h *Handler) spliceInbound(ln *listener, peer netip.Addr, pport uint16, local netip.Addr, payload []byte) {
	proto := uint8(header.ProtoUDP)
	if ln.ns {
		proto = spliceProtoNS
	}
	key := flow.MakeKey(proto, peer, pport, local, ln.port)
	i, ok := h.ft.Lookup(&key)
	if ok && h.ft.Kind(i) != flow.UDPSplice {
		h.Stats.SpliceDropped++
		return
	}
	if !ok {
		var err error
		if i, err = h.newSplice(ln, peer, pport, local, &key); err != nil {
			h.Stats.SpliceDropped++
			if logging.Debugging() {
				logging.Debugf("UDP splice from [%v]:%d to [%v]:%d: %v", peer, pport, local, ln.port, err)
			}
			return
		}
	}
	f := &h.splices[i]
	f.last = h.l.Now()
	if e := sys.Sendto(int(f.fd[1]), payload, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil, 0); e != 0 {
		h.Stats.SpliceDropped++
		return
	}
	h.Stats.Spliced++
}

// errSpliceRefused: nat.Target has no loopback path for the datagram.
var errSpliceRefused = errors.New("no loopback path for this flow")

// newSplice makes the loopback flow of a datagram from peer:pport to
// local:ln.port: its reply socket on the listener's side, its target
// socket on the other, both registered with the loop.
//
// Returns the flow or an error.
func (h *Handler) newSplice(ln *listener, peer netip.Addr, pport uint16, local netip.Addr, key *flow.Key) (flow.Index, error) {
	h.spliceBufs()
	rule := &ln.spec.Rules[ln.rule]
	pif := nat.PifHost
	if ln.ns {
		pif = nat.PifSplice
	}
	ini := nat.Side{Pif: pif, Src: peer, SrcPort: pport, Dst: local, DstPort: ln.port}
	tgt := nat.Target(h.cfg, h.g, header.ProtoUDP, &ini, &nat.Rule{To: rule.Target(ln.port), TAddr: rule.TAddr})
	if tgt.Pif != nat.PifSplice && tgt.Pif != nat.PifHost {
		return flow.None, errSpliceRefused
	}
	v6 := !peer.Is4()
	i, err := h.ft.Alloc(flow.UDPSplice)
	if err != nil {
		return flow.None, err
	}
	reply, via, err := h.replySocket(ln, v6, local, peer, pport, 0)
	if err != nil {
		h.ft.Free(i)
		return flow.None, err
	}
	target, err := h.openFlowSocket(tgt.Dst.Is6(), tgt.Src, tgt.SrcPort, "", tgt.Dst, tgt.DstPort, 0, true, tgt.Pif == nat.PifSplice)
	if err != nil {
		if !via {
			unix.Close(reply)
		}
		h.ft.Free(i)
		return flow.None, err
	}
	f := &h.splices[i]
	*f = spliceFlow{fd: [2]int32{int32(reply), int32(target)}, last: h.l.Now(), pos: int32(len(h.sactive)),
		via: via, via6: ln.v6, pport: pport, peer: peer.As16()}
	h.sactive = append(h.sactive, i)
	h.Stats.SplicesCreated++
	if err := h.ft.Bind(i, 0, key); err != nil {
		h.closeSplice(i)
		return flow.None, err
	}
	for s := 0; s < 2; s++ {
		if s == 0 && via {
			continue // the listener is watched already
		}
		if err := h.l.Add(int(f.fd[s]), unix.EPOLLIN, loop.MakeRef(loop.KindUDPSplice, int(f.fd[s]), uint32(i)<<1|uint32(s))); err != nil {
			h.closeSplice(i)
			return flow.None, err
		}
	}
	if logging.Debugging() {
		logging.Debugf("UDP splice flow %d: [%v]:%d -> [%v]:%d, on to [%v]:%d (%v)", i, peer, pport, local, ln.port, tgt.Dst, tgt.DstPort, tgt.Pif)
	}
	return i, nil
}

// spliceEvent handles readiness of one socket of a loopback flow: what it
// received goes out of the flow's other socket.
func (h *Handler) spliceEvent(r loop.Ref, events uint32) {
	i, s := flow.Index(r.Index()>>1), int(r.Index()&1)
	if int(i) >= len(h.splices) || h.ft.Kind(i) != flow.UDPSplice {
		return
	}
	f := &h.splices[i]
	if int(f.fd[s]) != r.FD() {
		return // a stale event for a descriptor closed this turn
	}
	if events&unix.EPOLLERR != 0 {
		// An ICMP error for what we sent (port unreachable, mostly):
		// the client learns nothing from us, as with the C original;
		// read it so that EPOLLERR stops.
		for j := 0; j < maxErrors; j++ {
			if _, _, e := h.eq.read(int(f.fd[s])); e != 0 {
				break
			}
		}
	}
	if events&unix.EPOLLIN != 0 {
		h.spliceMove(f, s)
	}
}

// spliceMove moves the datagrams queued on socket s of f to its other
// socket: recvmmsg batches into the loopback buffers, each sent with one
// sendmmsg. Both sockets are connected, so no address is read or written.
// Bounded to maxRounds batches per event (level-triggered: the rest waits
// for the next turn).
func (h *Handler) spliceMove(f *spliceFlow, s int) {
	sp := h.sp
	m := sp.msgs
	for round := 0; round < maxRounds; round++ {
		for j := range sp.bufs {
			m.SetBuf(j, sp.bufs[j])
		}
		n, e := sys.Recvmmsg(int(f.fd[s]), m.Hdrs, unix.MSG_DONTWAIT)
		if e != 0 || n == 0 {
			return
		}
		f.last = h.l.Now()
		for j := 0; j < n; j++ {
			m.SetBuf(j, sp.bufs[j][:m.Hdrs[j].Len])
		}
		if s == 1 && f.via {
			h.viaName(m.Hdrs[:n], netip.AddrFrom16(f.peer), f.pport, f.via6)
		}
		sent := 0
		for sent < n {
			k, e := sys.Sendmmsg(int(f.fd[1-s]), m.Hdrs[sent:n], unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			if e != 0 {
				if e == unix.EAGAIN || e == unix.ENOBUFS {
					h.Stats.SpliceDropped += uint64(n - sent)
					break
				}
				// A pending ICMP error fails one send: skip that
				// datagram, go on with the rest.
				h.Stats.SpliceDropped++
				sent++
				continue
			}
			sent += k
			h.Stats.Spliced += uint64(k)
		}
		if s == 1 && f.via {
			clearNames(m.Hdrs[:n]) // the headers serve connected sockets too
		}
		if n < len(sp.bufs) {
			return
		}
	}
}

// closeSplice closes loopback flow i's sockets and frees its slot.
func (h *Handler) closeSplice(i flow.Index) {
	f := &h.splices[i]
	if f.via {
		f.fd[0], f.via = -1, false // the listener's
	}
	for s := range f.fd {
		if f.fd[s] >= 0 {
			unix.Close(int(f.fd[s]))
			f.fd[s] = -1
		}
	}
	last := h.sactive[len(h.sactive)-1]
	h.sactive[f.pos] = last
	h.splices[last].pos = f.pos
	h.sactive = h.sactive[:len(h.sactive)-1]
	h.ft.Free(i)
	h.Stats.SplicesClosed++
}

// tickSplices closes the loopback flows that were idle for the flow
// timeout (conntrack's unreplied one: a loopback flow has no state that
// tells a stream).
//
// now: the loop time.
func (h *Handler) tickSplices(now int64) {
	for k := len(h.sactive) - 1; k >= 0; k-- {
		if k >= len(h.sactive) {
			continue
		}
		i := h.sactive[k]
		if now-h.splices[i].last >= h.timeout {
			if logging.Debugging() {
				logging.Debugf("UDP splice flow %d: timed out", i)
			}
			h.closeSplice(i)
		}
	}
}

// Splices returns how many loopback flows are open.
func (h *Handler) Splices() int { return len(h.sactive) }
