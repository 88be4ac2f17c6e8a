// hostile.go: hostile mode: a front end that breaks the protocol or the
// ring contract in one chosen way, for the tests that check a back end
// survives it (and serves the next front end).

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// hostileKindDesc is one kind of violation: its name, what it does, and
// the sequence that does it.
type hostileKindDesc struct {
	name, what string
	run        func(h *hostile) error
}

// hostileKinds are the kinds, in the order -hostile list prints them.
var hostileKinds = []hostileKindDesc{
	{"desc-oob", "descriptors outside every region (TX, and RX buffers a reply would land in)", (*hostile).descOOB},
	{"desc-len", "descriptor lengths past the end of their region, and of 4 GiB", (*hostile).descLen},
	{"chain-loop", "chains that loop (a descriptor naming itself, two naming each other), TX and RX", (*hostile).chainLoop},
	{"next-oob", "a chain whose next index is past the ring", (*hostile).nextOOB},
	{"head-oob", "avail ring heads past the ring", (*hostile).headOOB},
	{"avail-jump", "an avail index 5000 ahead of the last one (more than the ring)", (*hostile).availJump},
	{"wrong-dir", "a writable descriptor in a TX chain, a readable one in an RX chain", (*hostile).wrongDir},
	{"indirect", "an INDIRECT descriptor (not negotiated) pointing at a looping table", (*hostile).indirect},
	{"ring-size", "SET_VRING_NUM 255 (not a power of 2), then traffic", hostileRingSize(255)},
	{"ring-size-0", "SET_VRING_NUM 0, then traffic", hostileRingSize(0)},
	{"ring-size-big", "SET_VRING_NUM 65536 (past the largest split ring), then traffic", hostileRingSize(65536)},
	{"ring-addr", "SET_VRING_ADDR outside the regions, and a used ring across a region's end", (*hostile).ringAddr},
	{"no-mem", "the rings set up and kicked without any SET_MEM_TABLE", (*hostile).noMem},
	{"mem-past-file", "a region that runs past the end of its file (touching it is SIGBUS)", (*hostile).memPastFile},
	{"mem-too-many", "SET_MEM_TABLE with 9 regions", (*hostile).memTooMany},
	{"mem-fd-count", "SET_MEM_TABLE with 2 regions and 1 descriptor", (*hostile).memFdCount},
	{"bad-index", "ring indexes 7 and 255 in NUM, BASE, ADDR, KICK, CALL, ENABLE, GET_VRING_BASE", (*hostile).badIndex},
	{"garbage", "an unknown request, and a payload size past any message's", (*hostile).garbage},
}

// hostileKind returns the kind named name, nil if there is none.
func hostileKind(name string) *hostileKindDesc {
	for i := range hostileKinds {
		if hostileKinds[i].name == name {
			return &hostileKinds[i]
		}
	}
	return nil
}

// hostile is one hostile session.
type hostile struct {
	s *session
	// what the back end did, as hostileMain says it.
	closed bool
}

// hostileMain runs hostile mode: the session, the kind's sequence, the
// wait for a reaction, and the one line that says what happened.
func hostileMain(o opts, out io.Writer) error {
	o.rxBuf = mrgBufLen
	s, err := newSession(o)
	if err != nil {
		return err
	}
	defer s.close()
	h := &hostile{s: s}
	k := hostileKind(o.hostile)
	err = k.run(h)
	var what string
	switch {
	case errors.Is(err, errClosed):
		what = "closed the connection: " + err.Error()
	case err != nil && errors.Is(err, errBackEnd):
		what = err.Error()
	case err != nil:
		what = "refused: " + err.Error()
	default:
		what = h.react(o.wait)
	}
	fmt.Fprintf(out, "hostile %s: %s\n", k.name, what)
	return nil
}

// react waits up to wait for the back end to react to what is in the
// rings (it was kicked): a used entry on either ring, or the connection
// closed; it says which, or that nothing happened.
func (h *hostile) react(wait time.Duration) string {
	closed := make(chan error, 1)
	go func() { closed <- watchClose(h.s.c) }()
	rx0, tx0 := h.s.g.rx.usedIdx(), h.s.g.tx.usedIdx()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		select {
		case <-closed:
			return "closed the connection"
		case <-time.After(10 * time.Millisecond):
		}
		rx, tx := h.s.g.rx.usedIdx(), h.s.g.tx.usedIdx()
		if rx != rx0 || tx != tx0 {
			// Give it the rest of a moment to do more (or close).
			time.Sleep(50 * time.Millisecond)
			rx, tx = h.s.g.rx.usedIdx(), h.s.g.tx.usedIdx()
			return fmt.Sprintf("used %d RX and %d TX entries", uint16(rx-rx0), uint16(tx-tx0))
		}
	}
	return fmt.Sprintf("nothing within %v (connection open, rings untouched)", wait)
}

// normal runs the handshake as peer mode does (init, start).
func (h *hostile) normal() error {
	if err := h.s.init(); err != nil {
		return err
	}
	return h.s.start()
}

// arpRequest returns a header and a broadcast ARP request for the IPv4
// gateway address passt maps by default: a frame the back end answers on
// RX (so that its RX path meets hostile RX buffers).
func arpRequest() []byte {
	f := make([]byte, vnetHdrLen+42)
	e := f[vnetHdrLen:]
	copy(e[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(e[6:12], []byte{0x02, 0, 0, 0, 0x66, 0x01})
	binary.BigEndian.PutUint16(e[12:], 0x0806)
	a := e[14:]
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], 0x0800)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1)
	copy(a[8:14], e[6:12])
	copy(a[14:18], []byte{10, 0, 2, 15})
	copy(a[24:28], []byte{10, 0, 2, 2})
	return f
}

// txChain puts a chain starting at descriptor head in the TX avail ring
// and publishes it (the descriptors are the caller's).
func (h *hostile) txPost(heads ...uint16) {
	r := h.s.g.tx
	for _, hd := range heads {
		r.post(hd)
	}
	r.publish()
}

// txValid makes TX descriptor id a valid frame: f copied into its buffer.
func (h *hostile) txValid(id uint16, f []byte) {
	copy(h.s.g.txBuf(int(id)), f)
	h.s.g.tx.desc[id] = desc{addr: h.s.g.gpa(h.s.g.txBufOff + int(id)*h.s.g.txBufLen), len: uint32(len(f))}
}

// kickBoth kicks both queues.
func (h *hostile) kickBoth() error {
	if err := kick(h.s.kick[0]); err != nil {
		return err
	}
	return kick(h.s.kick[1])
}

// rxAll sets every RX descriptor to d (the avail ring already holds all).
func (h *hostile) rxAll(d func(i int) desc) {
	for i := 0; i < h.s.g.rx.n; i++ {
		h.s.g.rx.desc[i] = d(i)
	}
}

// descOOB: descriptors outside every region.
func (h *hostile) descOOB() error {
	if err := h.normal(); err != nil {
		return err
	}
	const far = 0x7000_0000_0000
	h.rxAll(func(i int) desc { return desc{addr: far + uint64(i)<<16, len: mrgBufLen, flags: descWrite} })
	tx := h.s.g.tx
	tx.desc[0] = desc{addr: far, len: 100}
	tx.desc[1] = desc{addr: gpaLow - 4096, len: 100} // just below region 0
	h.txValid(2, arpRequest())
	h.txPost(0, 1, 2)
	return h.kickBoth()
}

// descLen: lengths past the end of the region.
func (h *hostile) descLen() error {
	if err := h.normal(); err != nil {
		return err
	}
	g := h.s.g
	low, high := g.regions[0], g.regions[1]
	h.rxAll(func(i int) desc {
		return desc{addr: high.gpa + high.size - 64, len: 1 << 20, flags: descWrite}
	})
	tx := g.tx
	tx.desc[0] = desc{addr: low.gpa + low.size - 100, len: 65536}
	tx.desc[1] = desc{addr: low.gpa, len: 0xffffffff}
	h.txValid(2, arpRequest())
	h.txPost(0, 1, 2)
	return h.kickBoth()
}

// chainLoop: chains that loop.
func (h *hostile) chainLoop() error {
	if err := h.normal(); err != nil {
		return err
	}
	g := h.s.g
	tx := g.tx
	a := arpRequest()
	h.txValid(0, a)
	tx.desc[0].flags, tx.desc[0].next = descNext, 0
	h.txValid(1, a[:vnetHdrLen])
	tx.desc[1].flags, tx.desc[1].next = descNext, 2
	h.txValid(2, a[vnetHdrLen:])
	tx.desc[2].flags, tx.desc[2].next = descNext, 1
	h.txValid(3, a)
	h.rxAll(func(i int) desc {
		d := g.rx.desc[i]
		d.flags |= descNext
		d.next = uint16(i)
		return d
	})
	h.txPost(0, 1, 3)
	return h.kickBoth()
}

// nextOOB: a next index past the ring.
func (h *hostile) nextOOB() error {
	if err := h.normal(); err != nil {
		return err
	}
	tx := h.s.g.tx
	a := arpRequest()
	h.txValid(0, a[:vnetHdrLen])
	tx.desc[0].flags, tx.desc[0].next = descNext, uint16(tx.n+5)
	h.txValid(1, a)
	h.rxAll(func(i int) desc {
		d := h.s.g.rx.desc[i]
		d.flags |= descNext
		d.next = 0xffff
		return d
	})
	h.txPost(0, 1)
	return h.kickBoth()
}

// headOOB: heads past the ring in both avail rings.
func (h *hostile) headOOB() error {
	if err := h.normal(); err != nil {
		return err
	}
	rx := h.s.g.rx
	for i := 0; i < rx.n; i++ {
		rx.availRing[i] = uint16(rx.n + i)
	}
	h.txValid(1, arpRequest())
	h.txPost(0xffff, uint16(h.s.g.tx.n), 1)
	return h.kickBoth()
}

// availJump: avail.idx far ahead.
func (h *hostile) availJump() error {
	if err := h.normal(); err != nil {
		return err
	}
	tx := h.s.g.tx
	h.txValid(0, arpRequest())
	tx.post(0)
	tx.availIdx += 5000
	tx.publish()
	return h.kickBoth()
}

// wrongDir: buffers of the wrong direction.
func (h *hostile) wrongDir() error {
	if err := h.normal(); err != nil {
		return err
	}
	tx := h.s.g.tx
	a := arpRequest()
	h.txValid(0, a)
	tx.desc[0].flags = descWrite // a TX frame the device may write
	h.txValid(1, a[:vnetHdrLen])
	tx.desc[1].flags, tx.desc[1].next = descWrite|descNext, 2
	h.txValid(2, a[vnetHdrLen:]) // readable after writable
	h.txValid(3, a)
	h.rxAll(func(i int) desc { d := h.s.g.rx.desc[i]; d.flags = 0; return d })
	h.txPost(0, 1, 3)
	return h.kickBoth()
}

// indirect: INDIRECT descriptors, which were not negotiated, pointing at
// a table (in TX buffer 10) whose entries loop.
func (h *hostile) indirect() error {
	if err := h.normal(); err != nil {
		return err
	}
	g := h.s.g
	tx := g.tx
	tbl := g.txBuf(10)
	for i := 0; i < 4; i++ {
		binary.LittleEndian.PutUint64(tbl[16*i:], g.gpa(g.txBufOff+11*g.txBufLen))
		binary.LittleEndian.PutUint32(tbl[16*i+8:], 64)
		binary.LittleEndian.PutUint16(tbl[16*i+12:], descNext)
		binary.LittleEndian.PutUint16(tbl[16*i+14:], uint16(i)) // each names itself
	}
	tx.desc[0] = desc{addr: g.gpa(g.txBufOff + 10*g.txBufLen), len: 64, flags: descIndirect}
	tx.desc[1] = desc{addr: g.gpa(g.txBufOff + 10*g.txBufLen), len: 0xfff0, flags: descIndirect} // past the buffer
	h.txValid(2, arpRequest())
	h.rxAll(func(i int) desc {
		return desc{addr: g.gpa(g.txBufOff + 10*g.txBufLen), len: 64, flags: descIndirect}
	})
	h.txPost(0, 1, 2)
	return h.kickBoth()
}

// hostileRingSize returns the kind that gives both rings size num, then
// starts as usual and sends a frame.
func hostileRingSize(num uint32) func(h *hostile) error {
	return func(h *hostile) error {
		s := h.s
		if err := s.init(); err != nil {
			return err
		}
		return h.startWith(func(q int, req uint32, p []byte) []byte {
			if req == reqSetVringNum {
				binary.LittleEndian.PutUint32(p[4:], num)
			}
			return p
		}, true)
	}
}

// startWith is session.start with each ring message's payload passed
// through edit (q, request, payload) and, if traffic, an ARP request
// posted on TX and both queues kicked.
func (h *hostile) startWith(edit func(q int, req uint32, p []byte) []byte, traffic bool) error {
	s := h.s
	s.g.reset()
	s.g.fillDescs()
	for i := 0; i < s.g.rx.n; i++ {
		s.g.rx.post(uint16(i))
	}
	s.g.rx.publish()
	if err := s.c.setU64(reqSetFeatures, s.features); err != nil {
		return err
	}
	if err := h.memTable(memTable(s.g.regions), s.g.fd, s.g.fd); err != nil {
		return err
	}
	for q, r := range []*ring{s.g.rx, s.g.tx} {
		for _, m := range []struct {
			req uint32
			p   []byte
		}{
			{reqSetVringNum, vringState(uint32(q), uint32(r.n))},
			{reqSetVringBase, vringState(uint32(q), 0)},
			{reqSetVringAddr, vringAddr(uint32(q), s.g.qva(r.descOff), s.g.qva(r.usedOff), s.g.qva(r.availOff))},
		} {
			if err := s.c.send(m.req, 0, edit(q, m.req, m.p)); err != nil {
				return err
			}
		}
		if err := s.c.setU64(reqSetVringKick, uint64(q), s.kick[q]); err != nil {
			return err
		}
		if err := s.c.setU64(reqSetVringCall, uint64(q), s.call[q]); err != nil {
			return err
		}
	}
	for q := uint32(0); q < 2; q++ {
		if err := s.c.send(reqSetVringEnable, 0, vringState(q, 1)); err != nil {
			return err
		}
	}
	if !traffic {
		return nil
	}
	h.txValid(0, arpRequest())
	h.txPost(0)
	return h.kickBoth()
}

// memTable sends SET_MEM_TABLE with payload p and fds, and waits for the
// back end to take it (see ctl.sync).
func (h *hostile) memTable(p []byte, fds ...int) error {
	flags := uint32(0)
	if h.s.c.replyAck {
		flags = flagNeedReply
	}
	if err := h.s.c.send(reqSetMemTable, flags, p, fds...); err != nil {
		return err
	}
	return h.s.c.sync(reqSetMemTable)
}

// ringAddr: ring addresses outside the regions (RX), and a used ring that
// runs past region 0's end (TX).
func (h *hostile) ringAddr() error {
	if err := h.s.init(); err != nil {
		return err
	}
	g := h.s.g
	end := g.regions[0].qva + g.regions[0].size
	return h.startWith(func(q int, req uint32, p []byte) []byte {
		if req != reqSetVringAddr {
			return p
		}
		if q == 0 {
			binary.LittleEndian.PutUint64(p[8:], 0x7fff_0000_0000)
			binary.LittleEndian.PutUint64(p[24:], 16)
		} else {
			binary.LittleEndian.PutUint64(p[16:], end-8)
		}
		return p
	}, true)
}

// noMem: rings without memory.
func (h *hostile) noMem() error {
	s := h.s
	if err := s.init(); err != nil {
		return err
	}
	if err := s.c.setU64(reqSetFeatures, s.features); err != nil {
		return err
	}
	for q, r := range []*ring{s.g.rx, s.g.tx} {
		if err := s.c.send(reqSetVringNum, 0, vringState(uint32(q), uint32(r.n))); err != nil {
			return err
		}
		if err := s.c.send(reqSetVringAddr, 0, vringAddr(uint32(q), s.g.qva(r.descOff), s.g.qva(r.usedOff), s.g.qva(r.availOff))); err != nil {
			return err
		}
		if err := s.c.setU64(reqSetVringKick, uint64(q), s.kick[q]); err != nil {
			return err
		}
		if err := s.c.send(reqSetVringEnable, 0, vringState(uint32(q), 1)); err != nil {
			return err
		}
	}
	if _, err := s.c.getU64(reqGetFeatures); err != nil { // still answering?
		return err
	}
	return h.kickBoth()
}

// memPastFile: region 1 claims 1 GiB more than the file has; the rings
// are set up inside region 0 and an ARP request makes the back end answer
// into RX buffers at the far end of region 1.
func (h *hostile) memPastFile() error {
	s := h.s
	if err := s.init(); err != nil {
		return err
	}
	regs := append([]region(nil), s.g.regions...)
	regs[1].size += 1 << 30
	if err := h.memTable(memTable(regs), s.g.fd, s.g.fd); err != nil {
		return err
	}
	if err := h.startWith(func(q int, req uint32, p []byte) []byte { return p }, false); err != nil {
		return err
	}
	// The RX buffers are put past the file's end, inside the claimed
	// region: the start above sent the honest table again, so send the
	// long one once more.
	if err := h.memTable(memTable(regs), s.g.fd, s.g.fd); err != nil {
		return err
	}
	far := regs[1].gpa + regs[1].size - 8*mrgBufLen
	h.rxAll(func(i int) desc { return desc{addr: far + uint64(i%8)*mrgBufLen, len: mrgBufLen, flags: descWrite} })
	h.txValid(0, arpRequest())
	h.txPost(0)
	return h.kickBoth()
}

// memTooMany: 9 regions.
func (h *hostile) memTooMany() error {
	if err := h.s.init(); err != nil {
		return err
	}
	g := h.s.g
	var regs []region
	fds := make([]int, 9)
	for i := range fds {
		fds[i] = g.fd
		regs = append(regs, region{gpa: gpaLow + uint64(i)<<20, size: pageSize, qva: g.base + uint64(i)*pageSize, offset: uint64(i) * pageSize})
	}
	p := binary.LittleEndian.AppendUint32(nil, 9)
	p = append(p, memTable(regs)[4:]...)
	if len(p) > maxPayload {
		// Past any message's payload: the header says so, the bytes
		// follow, as a confused front end would send them.
		return h.raw(reqSetMemTable, p, fds)
	}
	return h.memTable(p, fds...)
}

// memFdCount: two regions, one descriptor.
func (h *hostile) memFdCount() error {
	if err := h.s.init(); err != nil {
		return err
	}
	if err := h.memTable(memTable(h.s.g.regions), h.s.g.fd); err != nil {
		return err
	}
	return h.normalAfterInit()
}

// normalAfterInit starts as usual (init done) and sends traffic: after a
// violation the back end did not close on, does it still work?
func (h *hostile) normalAfterInit() error {
	return h.startWith(func(q int, req uint32, p []byte) []byte { return p }, true)
}

// badIndex: ring indexes no ring has.
func (h *hostile) badIndex() error {
	s := h.s
	if err := s.init(); err != nil {
		return err
	}
	for _, q := range []uint32{7, 255} {
		for _, m := range []struct {
			req uint32
			p   []byte
			fd  int
		}{
			{reqSetVringNum, vringState(q, 256), -1},
			{reqSetVringBase, vringState(q, 0), -1},
			{reqSetVringAddr, vringAddr(q, s.g.qva(0), s.g.qva(8192), s.g.qva(4096)), -1},
			{reqSetVringKick, u64(uint64(q)), s.kick[0]},
			{reqSetVringCall, u64(uint64(q)), s.call[0]},
			{reqSetVringEnable, vringState(q, 1), -1},
		} {
			var err error
			if m.fd >= 0 {
				err = s.c.send(m.req, 0, m.p, m.fd)
			} else {
				err = s.c.send(m.req, 0, m.p)
			}
			if err != nil {
				return err
			}
		}
	}
	if err := s.c.send(reqGetVringBase, 0, vringState(7, 0)); err != nil {
		return err
	}
	// A back end may answer GET_VRING_BASE 7 or refuse it in silence:
	// a GET_FEATURES round trip shows which (its reply comes second, or
	// alone).
	if err := s.c.send(reqGetFeatures, 0, nil); err != nil {
		return err
	}
	if err := h.skipTo(reqGetFeatures); err != nil {
		return err
	}
	return h.normalAfterInit()
}

// skipTo reads replies until one to req, dropping any before it.
func (h *hostile) skipTo(req uint32) error {
	c := h.s.c
	for i := 0; i < 4; i++ {
		c.c.SetReadDeadline(time.Now().Add(replyTimeout))
		var hd [hdrSize]byte
		if _, err := io.ReadFull(c.c, hd[:]); err != nil {
			if isConnEnd(err) {
				return errClosed
			}
			return err
		}
		sz := binary.LittleEndian.Uint32(hd[8:])
		if sz > maxPayload {
			return backEndErr("sent a reply with a %d-byte payload", sz)
		}
		if _, err := io.ReadFull(c.c, make([]byte, sz)); err != nil {
			return err
		}
		if binary.LittleEndian.Uint32(hd[0:]) == req {
			return nil
		}
	}
	return backEndErr("sent more replies than requests")
}

// garbage: an unknown request, then a size past any payload.
func (h *hostile) garbage() error {
	if err := h.s.init(); err != nil {
		return err
	}
	if err := h.raw(9999, nil, nil); err != nil {
		return err
	}
	if err := h.raw(reqSetFeatures, make([]byte, 4096), nil); err != nil {
		return err
	}
	if _, err := h.s.c.getU64(reqGetFeatures); err != nil {
		return err
	}
	return h.normalAfterInit()
}

// raw sends a message whose header says req and len(p), unchecked, with
// fds.
func (h *hostile) raw(req uint32, p []byte, fds []int) error {
	b := binary.LittleEndian.AppendUint32(nil, req)
	b = binary.LittleEndian.AppendUint32(b, flagVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
	b = append(b, p...)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	h.s.c.c.SetWriteDeadline(time.Now().Add(replyTimeout))
	if _, _, err := h.s.c.c.WriteMsgUnix(b, oob, nil); err != nil {
		if isConnEnd(err) {
			return errClosed
		}
		return err
	}
	return nil
}
