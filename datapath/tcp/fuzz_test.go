// FuzzFromGuest: coverage-guided fuzzing of the guest side of the TCP
// translation (FromGuest and the state machine behind it, our largest
// untrusted surface: whatever a guest sends reaches it once packet.Parse
// accepts the headers), against real host sockets on loopback, with the
// handler's bookkeeping (flow table, active list, timers, descriptors)
// checked after every input. The seed corpus runs with the unit tests.

package tcp

import (
	"encoding/binary"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/checksum"
	"gopasst/datapath/config"
	"gopasst/datapath/flow"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
	"gopasst/datapath/sys"
)

// The input format. Byte 0 is the number of records (modulo
// fuzzMaxRecs+1); that many records of fuzzRecLen bytes follow, and
// whatever is left after them is one raw frame (fuzzWorld.rawFrame). The
// top three bits of a record's first byte say what it is:
//
//	0-3  a guest segment of a fixed tuple (low bits: source port index in
//	     bits 0-2, the closed port if bit 3, IPv6 if bit 4), added to the
//	     pending batch
//	4    a guest segment of the connection at position (low 5 bits,
//	     modulo) of h.active: this reaches inbound connections, whose
//	     tuple the host chose (a fixed tuple if there is none)
//	5    a host action (fuzzWorld.hostAction)
//	6    time: a turn of the loop, a timer fired, a housekeeping scan
//	     (fuzzWorld.timeAction)
//	7    the pending batch goes to FromGuest
//
// A segment record: b1 TCP flags; b2 sequence delta (int8) from the next
// byte the connection expects of the guest, or from the end of the
// tuple's previous segment in the pending batch; b3 bits 0-1 the ACK's
// base (our next byte, the guest's last ACK, our highest byte, zero),
// bits 2-3 and 4-5 left shifts (0, 8, 16, 24) of the sequence and ACK
// deltas; b4 ACK delta (int8); b5-6 window; b7 option template
// (fuzzOptions), b8 its parameter; b9 payload length, or b9-10 (14 bits)
// if b10's top bit is set; b11 payload fill byte. Deltas from the live
// state, not absolute numbers, are what let the fuzzer through the
// handshake into ESTABLISHED, FIN and beyond whatever ISN the handler
// chose (for a tuple with no connection yet, the base is the ISN the
// handler will choose: the SYN+ACK comes within FromGuest over loopback).
const (
	fuzzRecLen     = 12
	fuzzMaxRecs    = 64
	fuzzMaxBatch   = 16 // packets per FromGuest call
	fuzzMaxPlen    = 1<<14 - 1
	fuzzFrameLen   = header.EthernetLen + header.IPv6Len + 60 + fuzzMaxPlen + 1
	fuzzMaxHost    = 32      // host-side sockets kept per input
	fuzzAllocEvery = 2000    // inputs between allocation checks
	fuzzAllocPort  = 39999   // guest port of the allocation check's connection
	fuzzHostIO     = 1 << 16 // host read and write buffer
)

// fuzzPorts are the guest source ports of the fixed tuples.
var fuzzPorts = [8]uint16{40100, 40101, 40102, 40103, 40104, 40105, 40106, 40107}

// Host addresses the fuzz world listens on (gw4 and gw6 map to them).
var (
	fuzzLoop4 = netip.MustParseAddr("127.0.0.1")
	fuzzLoop6 = netip.IPv6Loopback()
)

// fuzzPend is the predicted next guest sequence number of a tuple that
// already has a segment in the pending batch.
type fuzzPend struct {
	key  flow.Key
	next uint32
}

// fuzzWorld is a unit world with the host side the inputs talk to and the
// scratch space that keeps the harness free of allocations per input.
type fuzzWorld struct {
	u *unitWorld

	lfd   [2]int // our listeners on 127.0.0.1 and ::1: the handler's connects succeed
	lport uint16
	cfd   [2]int // bound, never listening: the handler's connects are refused
	cport uint16
	fport uint16 // the handler's own listeners (ListenPort): inbound connections

	host  []int // host-side sockets of the current input (accepted, or our clients)
	bufs  [][]byte
	batch []packet.Packet
	pend  []fuzzPend
	raw   []byte
	io    []byte
	opt   [40]byte
	sa    unix.RawSockaddrAny
	pfd   []unix.PollFd
	socks map[string]bool // the sockets open once the world was made (openSockets)
	runs  int
}

// FuzzFromGuest feeds guest segments (structured records, and one raw
// frame through packet.Parse) to FromGuest, interleaved with host
// actions, loop turns, timers and housekeeping scans, and fails on a
// panic or on broken bookkeeping (fuzzWorld.check after the input,
// fuzzWorld.cleanup between inputs, fuzzWorld.allocCheck now and then).
func FuzzFromGuest(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	// One world per process (each fuzz worker runs this function once),
	// emptied between inputs: a new handler, loop and listeners per
	// input would cost more than most inputs.
	w := newFuzzWorld(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		w.runs++
		w.input(data)
		w.check(t)
		w.cleanup(t)
		// The allocation check costs a few loop turns over loopback:
		// now and then, and on the first input, so that plain go
		// test runs it too.
		if w.runs%fuzzAllocEvery == 1 {
			w.allocCheck(t)
		}
	})
}

// newFuzzWorld makes the fuzz world; f's cleanup closes it.
func newFuzzWorld(f *testing.F) *fuzzWorld {
	w := &fuzzWorld{
		bufs:  make([][]byte, fuzzMaxBatch+1),
		batch: make([]packet.Packet, 0, fuzzMaxBatch+1),
		pend:  make([]fuzzPend, 0, fuzzMaxBatch+1),
		host:  make([]int, 0, fuzzMaxHost),
		raw:   make([]byte, fuzzFrameLen),
		io:    make([]byte, fuzzHostIO),
		pfd:   make([]unix.PollFd, 1),
	}
	for i := range w.bufs {
		w.bufs[i] = make([]byte, fuzzFrameLen)
	}
	for i := range w.io {
		w.io[i] = byte(i)
	}
	w.u = newUnitWorld(f)
	var err error
	if w.lfd, w.lport, err = fuzzSocketPair(true); err != nil {
		f.Fatal(err)
	}
	if w.cfd, w.cport, err = fuzzSocketPair(false); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		for _, fd := range append(w.lfd[:], w.cfd[:]...) {
			unix.Close(fd)
		}
	})
	// The handler's listeners, on a port free in both families: found by
	// binding and releasing it (another process may take it meanwhile:
	// try again).
	h := w.u.h
	for try := 0; w.fport == 0; try++ {
		fds, port, err := fuzzSocketPair(false)
		if err == nil {
			unix.Close(fds[0])
			unix.Close(fds[1])
			if err = h.ListenPort(fuzzLoop4, port); err == nil {
				if err = h.ListenPort(fuzzLoop6, port); err == nil {
					w.fport = port
					break
				}
			}
			for _, l := range h.listeners {
				unix.Close(l.fd)
			}
			h.listeners = nil
		}
		if try == 20 {
			f.Fatalf("forwarded port: %v", err)
		}
	}
	w.socks = openSockets()
	return w
}

// fuzzSocketPair binds TCP sockets on 127.0.0.1 and ::1 to one port, and
// makes them listen if listen is set (else connects to the port are
// refused, and nobody else can take it while they are open).
//
// Returns the two descriptors (non-blocking) and the port.
func fuzzSocketPair(listen bool) ([2]int, uint16, error) {
	var err error
	for try := 0; try < 20; try++ {
		var fd [2]int
		fd[0], err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fd, 0, err
		}
		if err = unix.Bind(fd[0], &unix.SockaddrInet4{Addr: fuzzLoop4.As4()}); err != nil {
			unix.Close(fd[0])
			return fd, 0, err
		}
		sa, _ := unix.Getsockname(fd[0])
		port := sa.(*unix.SockaddrInet4).Port
		fd[1], err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			unix.Close(fd[0])
			return fd, 0, err
		}
		if err = unix.Bind(fd[1], &unix.SockaddrInet6{Addr: fuzzLoop6.As16(), Port: port}); err != nil {
			unix.Close(fd[0])
			unix.Close(fd[1])
			continue // the port is taken on ::1: another one
		}
		if listen {
			unix.Listen(fd[0], 128)
			unix.Listen(fd[1], 128)
		}
		return fd, uint16(port), nil
	}
	return [2]int{-1, -1}, 0, err
}

// input runs one fuzz input: its records in order, then its raw frame,
// the last batch, and two loop turns so that what the batch set off on
// the host side (connects, data, closes) is handled and the end-of-turn
// reap has run before the checks.
func (w *fuzzWorld) input(data []byte) {
	if len(data) == 0 {
		return
	}
	n := int(data[0]) % (fuzzMaxRecs + 1)
	data = data[1:]
	for ; n > 0 && len(data) >= fuzzRecLen; n-- {
		w.record(data[:fuzzRecLen])
		data = data[fuzzRecLen:]
	}
	w.rawFrame(data)
	w.deliver()
	w.turn(0)
	w.turn(0)
}

// record runs one record r (fuzzRecLen bytes).
func (w *fuzzWorld) record(r []byte) {
	switch r[0] >> 5 {
	case 0, 1, 2, 3:
		w.segment(w.tupleKey(r[0]), r)
	case 4:
		k, ok := w.activeKey(int(r[0] & 31))
		if !ok {
			k = w.tupleKey(r[0])
		}
		w.segment(k, r)
	case 5:
		w.hostAction(r)
	case 6:
		w.timeAction(r)
	case 7:
		w.deliver()
	}
}

// tupleKey returns the guest-side key of the fixed tuple that selector b
// names (see the input format).
func (w *fuzzWorld) tupleKey(b byte) flow.Key {
	k := flow.Key{Proto: header.ProtoTCP, SrcPort: fuzzPorts[b&7], DstPort: w.lport}
	if b&8 != 0 {
		k.DstPort = w.cport
	}
	if b&16 != 0 {
		k.Src, k.Dst = guest6.As16(), gw6.As16()
	} else {
		k.Src, k.Dst = guest4.As16(), gw4.As16()
	}
	return k
}

// activeKey returns the guest-side key of the connection at position n
// (modulo) of h.active, if there is one.
func (w *fuzzWorld) activeKey(n int) (flow.Key, bool) {
	h := w.u.h
	if len(h.active) == 0 {
		return flow.Key{}, false
	}
	k, ok := h.ft.Key(h.active[n%len(h.active)], 0)
	if !ok {
		return flow.Key{}, false
	}
	return *k, true
}

// fuzzGuestISN is the guest's initial sequence number for tuple k (any
// fixed value would do: the deltas are what the fuzzer varies).
func fuzzGuestISN(k *flow.Key) uint32 { return uint32(k.SrcPort)<<16 | 0x1234 }

// segment adds to the pending batch the guest segment that record r
// describes for tuple k, its numbers taken relative to the connection's
// current state (see the input format).
func (w *fuzzWorld) segment(k flow.Key, r []byte) {
	if len(w.batch) == fuzzMaxBatch {
		w.deliver()
	}
	h := w.u.h
	fl := r[1]
	var seq uint32
	var acks [4]uint32
	if i, ok := h.ft.Lookup(&k); ok && h.ft.Kind(i) == flow.TCP {
		c := &h.conns[i]
		seq = c.seqFromTap
		acks = [4]uint32{c.seqToTap, c.seqAckFromTap, c.seqMax, 0}
	} else {
		// No connection yet: the guest's ISN + 1, and ours + 1 as
		// open will choose it (the clock stands still between turns).
		seq = fuzzGuestISN(&k) + 1
		isn := h.isnKey.isn(&k, h.l.Now()) + 1
		acks = [4]uint32{isn, isn, isn, 0}
	}
	pend := -1
	for j := range w.pend {
		if w.pend[j].key == k {
			pend, seq = j, w.pend[j].next
		}
	}
	shift := [4]uint{0, 8, 16, 24}
	seq += uint32(int32(int8(r[2]))) << shift[r[3]>>2&3]
	if fl&flagSYN != 0 {
		seq-- // a SYN's sequence number is one before its first data byte
	}
	ack := acks[r[3]&3] + uint32(int32(int8(r[4])))<<shift[r[3]>>4&3]
	wnd := binary.BigEndian.Uint16(r[5:])
	plen := int(r[9])
	if r[10]&0x80 != 0 {
		plen = int(binary.BigEndian.Uint16(r[9:])) & fuzzMaxPlen
	}
	opts := fuzzOptions(&w.opt, r[7], r[8])
	p, err := fuzzFrame(w.bufs[len(w.batch)], &k, seq, ack, fl, wnd, opts, plen, r[11])
	if err != nil {
		return
	}
	w.batch = append(w.batch, p)
	next := seq + uint32(plen)
	if fl&flagSYN != 0 {
		next++
	}
	if fl&flagFIN != 0 {
		next++
	}
	if pend >= 0 {
		w.pend[pend].next = next
	} else {
		w.pend = append(w.pend, fuzzPend{key: k, next: next})
	}
}

// fuzzOptions returns option template sel (modulo 8) with parameter par,
// written into buf: none, MSS, MSS and window scale, window scale alone,
// a zero length, SACK-permitted and timestamps, a length past the end,
// and an end-of-list followed by junk. Every template is a multiple of 4
// bytes long (EncodeTCP's data offset); raw frames cover the rest.
func fuzzOptions(buf *[40]byte, sel, par byte) []byte {
	mss := uint16(par) << 8
	if par < 64 {
		mss = uint16(par) // tiny MSS values: 0 (absent) to 63
	}
	b := buf[:]
	switch sel % 8 {
	case 1:
		return b[:header.PutTCPOptMSS(b, mss)]
	case 2:
		n := header.PutTCPOptMSS(b, 1460)
		return b[:n+header.PutTCPOptWS(b[n:], par)]
	case 3:
		return b[:header.PutTCPOptWS(b, par)]
	case 4:
		return append(b[:0], header.TCPOptWS, 0, 0, 0)
	case 5:
		b = append(b[:0], header.TCPOptNOP, header.TCPOptNOP, header.TCPOptSACKPerm, 2, header.TCPOptTimestamp, 10)
		return append(b, par, 0, 0, 1, 0, 0, 0, 0)
	case 6:
		return append(b[:0], header.TCPOptMSS, 5, par, 0)
	case 7:
		return append(b[:0], header.TCPOptEOL, header.TCPOptMSS, 4, par)
	}
	return nil
}

// fuzzFrame builds into f a guest frame of tuple k (IPv4 or IPv6 as the
// key is) with options opts and plen payload bytes of value fill, with
// the encoders guestFrame uses, and parses it.
func fuzzFrame(f []byte, k *flow.Key, seq, ack uint32, flags uint8, wnd uint16, opts []byte, plen int, fill byte) (packet.Packet, error) {
	tcpLen := header.TCPMinLen + len(opts) + plen
	copy(f[0:6], config.DefaultMAC[:])
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 1})
	l4 := header.EthernetLen
	var sum uint16
	if k.IsV4() {
		src, dst := [4]byte(k.Src[12:]), [4]byte(k.Dst[12:])
		binary.BigEndian.PutUint16(f[12:], header.EtherTypeIPv4)
		l4 += header.EncodeIPv4(f[l4:], header.IPv4Fields{TTL: 64, Proto: header.ProtoTCP, Src: src, Dst: dst, PayloadLen: tcpLen})
		sum = checksum.PseudoHeaderIPv4(src, dst, header.ProtoTCP, uint16(tcpLen))
	} else {
		binary.BigEndian.PutUint16(f[12:], header.EtherTypeIPv6)
		l4 += header.EncodeIPv6(f[l4:], header.IPv6Fields{PayloadLen: tcpLen, NextHeader: header.ProtoTCP, HopLimit: 64, Src: k.Src, Dst: k.Dst})
		sum = checksum.PseudoHeaderIPv6(&k.Src, &k.Dst, header.ProtoTCP, uint32(tcpLen))
	}
	tcp := f[l4 : l4+tcpLen]
	header.EncodeTCP(tcp, header.TCPFields{SrcPort: k.SrcPort, DstPort: k.DstPort, Seq: seq, Ack: ack, Flags: flags, Window: wnd, OptLen: len(opts)})
	copy(tcp[header.TCPMinLen:], opts)
	pl := tcp[header.TCPMinLen+len(opts):]
	for i := range pl {
		pl[i] = fill
	}
	binary.BigEndian.PutUint16(tcp[16:], checksum.Checksum(tcp, sum))
	return packet.Parse(f[:l4+tcpLen])
}

// rawFrame adds the input's remainder to the pending batch as one frame,
// if packet.Parse takes it as TCP: byte 0 (modulo 3) says whether the
// rest is a whole Ethernet frame or the TCP header and payload behind our
// IPv4 or IPv6 header (most of the malformed cases are in TCP headers:
// data offsets, option lengths, IP lengths that cut them). Like the
// demultiplexer, it drops loopback addresses; unlike it, it drops every
// destination but the gateway's, and sets the destination port to our
// listener's or the closed one, so that connects go to our loopback
// sockets only.
func (w *fuzzWorld) rawFrame(data []byte) {
	if len(data) < 2 {
		return
	}
	mode, b := data[0]%3, data[1:]
	f := w.raw
	switch mode {
	case 0:
		f = f[:copy(f, b)]
	case 1, 2:
		copy(f[0:6], config.DefaultMAC[:])
		copy(f[6:12], []byte{2, 0, 0, 0, 0, 1})
		l4 := header.EthernetLen
		if mode == 1 {
			binary.BigEndian.PutUint16(f[12:], header.EtherTypeIPv4)
			l4 += header.IPv4MinLen
		} else {
			binary.BigEndian.PutUint16(f[12:], header.EtherTypeIPv6)
			l4 += header.IPv6Len
		}
		n := copy(f[l4:], b)
		if mode == 1 {
			header.EncodeIPv4(f[header.EthernetLen:], header.IPv4Fields{TTL: 64, Proto: header.ProtoTCP, Src: guest4.As4(), Dst: gw4.As4(), PayloadLen: n})
		} else {
			header.EncodeIPv6(f[header.EthernetLen:], header.IPv6Fields{PayloadLen: n, NextHeader: header.ProtoTCP, HopLimit: 64, Src: guest6.As16(), Dst: gw6.As16()})
		}
		f = f[:l4+n]
	}
	p, err := packet.Parse(f)
	if err != nil || p.Proto != header.ProtoTCP {
		return
	}
	if p.Src.IsLoopback() || p.Dst.IsLoopback() || (p.Dst != gw4 && p.Dst != gw6) {
		return
	}
	port := w.lport
	if p.DstPort&1 != 0 {
		port = w.cport
	}
	binary.BigEndian.PutUint16(p.L4Bytes()[2:], port)
	p.DstPort = port
	if len(w.batch) == fuzzMaxBatch {
		w.deliver()
	}
	w.batch = append(w.batch, p)
}

// deliver hands the pending batch to FromGuest (as the demultiplexer
// does, outside the end-of-turn reap: connections it closes are freed by
// the next turn), drops the frames it queued towards the guest, and takes
// the connections it made to our listeners.
func (w *fuzzWorld) deliver() {
	if len(w.batch) > 0 {
		w.u.h.FromGuest(w.batch)
	}
	w.batch = w.batch[:0]
	w.pend = w.pend[:0]
	w.u.out.Flush()
	w.accept()
}

// turn turns the loop once, waiting at most d, then drops the frames
// queued towards the guest and takes new connections to our listeners.
func (w *fuzzWorld) turn(d time.Duration) {
	w.u.l.Turn(d)
	w.u.out.Flush()
	w.accept()
}

// accept takes the connections pending on our listeners (the host ends
// of the handler's connects), closing with a reset those beyond
// fuzzMaxHost.
func (w *fuzzWorld) accept() {
	for _, l := range w.lfd {
		for {
			fd, e := sys.Accept4(l, &w.sa)
			if e != 0 {
				break
			}
			if len(w.host) == cap(w.host) {
				sys.CloseRST(fd)
				continue
			}
			w.host = append(w.host, fd)
		}
	}
}

// hostAction runs host action r[1] (modulo 10) on host socket r[2]
// (modulo), with size n from r[3:5]: 0 write n bytes, 1 read everything,
// 2 echo up to n bytes, 3 shut down writing (FIN), 4 shut down reading,
// 5 close, 6 close with a reset, 7 a receive buffer of n bytes (the
// handler's writes run short), 8 and 9 connect to the handler's listener
// over IPv4 and IPv6 (an inbound connection).
func (w *fuzzWorld) hostAction(r []byte) {
	act := r[1] % 10
	n := int(binary.BigEndian.Uint16(r[3:])) + 1
	if act >= 8 {
		if len(w.host) == cap(w.host) {
			return
		}
		af := unix.AF_INET
		var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: fuzzLoop4.As4(), Port: int(w.fport)}
		if act == 9 {
			af = unix.AF_INET6
			sa = &unix.SockaddrInet6{Addr: fuzzLoop6.As16(), Port: int(w.fport)}
		}
		fd, err := unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return
		}
		unix.Connect(fd, sa) // EINPROGRESS, though done over loopback
		w.host = append(w.host, fd)
		return
	}
	if len(w.host) == 0 {
		return
	}
	k := int(r[2]) % len(w.host)
	fd := w.host[k]
	switch act {
	case 0:
		unix.Write(fd, w.io[:min(n, len(w.io))])
	case 1:
		for j := 0; j < 8; j++ {
			if m, _ := unix.Read(fd, w.io); m <= 0 {
				break
			}
		}
	case 2:
		if m, _ := unix.Read(fd, w.io[:min(n, len(w.io))]); m > 0 {
			unix.Write(fd, w.io[:m])
		}
	case 3:
		unix.Shutdown(fd, unix.SHUT_WR)
	case 4:
		unix.Shutdown(fd, unix.SHUT_RD)
	case 5, 6:
		if act == 5 {
			unix.Close(fd)
		} else {
			sys.CloseRST(fd)
		}
		w.host[k] = w.host[len(w.host)-1]
		w.host = w.host[:len(w.host)-1]
	case 7:
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n)
	}
}

// timeAction runs time action r[1] (modulo 6): 0 a loop turn that does
// not wait, 1 one that waits up to 1 ms, 2 and 3 the expiry of the timer
// of connection r[2] (modulo) of h.active if it is armed (what the loop
// would do after its timeout; the fuzzer cannot wait seconds), 4 the
// keepalive scan, 5 the idle scan (both due now as far as tick knows).
func (w *fuzzWorld) timeAction(r []byte) {
	h := w.u.h
	switch r[1] % 6 {
	case 0:
		w.turn(0)
	case 1:
		w.turn(time.Millisecond)
	case 2, 3:
		if len(h.active) == 0 {
			return
		}
		id := int32(h.active[int(r[2])%len(h.active)])
		if _, armed := h.l.Timers().Armed(id); armed {
			h.l.Timers().Cancel(id) // as Timers.fire does before the callback
			h.onTimer(id, h.l.Now())
		}
		w.u.out.Flush()
	case 4:
		h.tick(h.lastScan + int64(keepaliveScan))
		w.u.out.Flush()
	case 5:
		h.tick(h.idleScan + int64(idleTimeout))
		w.u.out.Flush()
	}
}

// check fails t unless the handler's bookkeeping is consistent after an
// input (the end-of-turn reap has run): nothing waits in closing; every
// flow in h.active is a live TCP flow at the position actPos gives, whose
// guest-side key finds it again, with a valid stream socket of its own and
// sequence numbers in order (the guest's ACK, then our next byte, then
// our highest); every slot not in h.active is free, with no timer armed
// (a timer left on a freed slot would fire on its next tenant).
func (w *fuzzWorld) check(t *testing.T) {
	h := w.u.h
	if len(h.closing) != 0 {
		t.Fatalf("%d connections still closing after the reap", len(h.closing))
	}
	if n := h.ft.Count(); n != len(h.active) {
		t.Fatalf("flow table has %d flows, h.active %d", n, len(h.active))
	}
	for p, i := range h.active {
		c := &h.conns[i]
		if h.actPos[i] != int32(p) {
			t.Fatalf("flow %d at position %d of h.active, actPos says %d", i, p, h.actPos[i])
		}
		if kd := h.ft.Kind(i); kd != flow.TCP {
			t.Fatalf("flow %d in h.active has kind %d", i, kd)
		}
		if c.flags&fClosed != 0 {
			t.Fatalf("flow %d closed but not reaped: %+v", i, *c)
		}
		k, ok := h.ft.Key(i, 0)
		if !ok {
			t.Fatalf("flow %d has no guest-side key: %+v", i, *c)
		}
		if j, ok := h.ft.Lookup(k); !ok || j != i {
			t.Fatalf("flow %d: its key %+v finds %d, %v", i, *k, j, ok)
		}
		if c.fd < 0 {
			t.Fatalf("flow %d open without a socket: %+v", i, *c)
		}
		if typ, err := unix.GetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
			t.Fatalf("flow %d: descriptor %d is no stream socket: %d, %v", i, c.fd, typ, err)
		}
		for _, o := range h.active[:p] {
			if h.conns[o].fd == c.fd {
				t.Fatalf("flows %d and %d share descriptor %d", o, i, c.fd)
			}
		}
		if !seqLE(c.seqAckFromTap, c.seqToTap) || !seqLE(c.seqToTap, c.seqMax) {
			t.Fatalf("flow %d: sequence out of order (acked %d, next %d, max %d): %+v", i, c.seqAckFromTap, c.seqToTap, c.seqMax, *c)
		}
	}
	for i := range h.actPos {
		if h.actPos[i] >= 0 {
			continue
		}
		if kd := h.ft.Kind(flow.Index(i)); kd != flow.Free {
			t.Fatalf("flow %d not in h.active has kind %d", i, kd)
		}
		if _, armed := h.l.Timers().Armed(int32(i)); armed {
			t.Fatalf("timer armed for free flow %d", i)
		}
	}
}

// cleanup closes every host-side socket and connection of the input
// (repeated: a connection the host made to the handler's listener may be
// accepted only now), then fails t unless the world is as it was made:
// no flow, no timer, and no socket but those open when the world was made
// (a socket leaked on some error path is what would pile up over
// millions of inputs and end in EMFILE; sockets are told apart by inode
// and descriptor number, so a reused number does not hide a leak, and
// other descriptors the runtime may open do not count). Goroutines are not
// counted: the handler starts none, so that count could only move with
// the testing framework's own.
func (w *fuzzWorld) cleanup(t *testing.T) {
	h := w.u.h
	for pass := 0; pass < 4 && (len(w.host) > 0 || len(h.active) > 0); pass++ {
		for _, fd := range w.host {
			sys.CloseRST(fd)
		}
		w.host = w.host[:0]
		for k := len(h.active) - 1; k >= 0; k-- {
			h.closeConn(h.active[k], true)
		}
		h.reap()
		w.turn(0)
	}
	w.check(t)
	if len(h.active) != 0 || len(w.host) != 0 {
		t.Fatalf("cleanup: %d connections, %d host sockets left", len(h.active), len(w.host))
	}
	for s := range openSockets() {
		if !w.socks[s] {
			t.Fatalf("socket leaked: %s", s)
		}
	}
}

// openSockets returns the sockets among the process's descriptors, each
// as "socket:[inode] fd N".
func openSockets() map[string]bool {
	m := map[string]bool{}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && strings.HasPrefix(l, "socket:") {
			m[l+" fd "+e.Name()] = true
		}
	}
	return m
}

// allocCheck fails t if the steady state (guest data written to the host
// socket and ACKed, host data peeked into a frame, the guest's ACK) of a
// new connection allocates after the inputs so far: TestSteadyStateAllocs
// proves it on a fresh handler, this that no input leaves the handler in
// a state where it does (a scratch slice grown, a list that no longer
// fits its capacity). It runs on the emptied world, not among an input's
// connections, whose error paths may log (and logging allocates), and
// measures fifty rounds, so that a stray allocation of the testing
// framework (AllocsPerRun counts the whole process) rounds down to 0
// while one per round does not.
func (w *fuzzWorld) allocCheck(t *testing.T) {
	u, h := w.u, w.u.h
	k := flow.Key{Proto: header.ProtoTCP, Src: guest4.As16(), Dst: gw4.As16(), SrcPort: fuzzAllocPort, DstPort: w.lport}
	opts := fuzzOptions(&w.opt, 2, ourWS)
	syn, _ := fuzzFrame(w.bufs[0], &k, 1000, 0, flagSYN, 65535, opts, 0, 0)
	h.FromGuest([]packet.Packet{syn})
	i, ok := h.ft.Lookup(&k)
	for n := 0; n < 50 && ok && h.conns[i].events == tapSynRcvd; n++ {
		w.turn(10 * time.Millisecond)
	}
	if !ok || h.conns[i].events != tapSynAckSent {
		t.Fatalf("allocation check: no SYN+ACK for our SYN (flow %d, %v)", i, ok)
	}
	gseq, hseq := uint32(1001), h.conns[i].seqToTap
	ack, _ := fuzzFrame(w.bufs[1], &k, gseq, hseq, flagACK, 65535, nil, 0, 0)
	h.FromGuest([]packet.Packet{ack})
	u.out.Flush()
	for n := 0; n < 50 && len(w.host) == 0; n++ {
		w.turn(time.Millisecond)
	}
	if h.conns[i].events != established || len(w.host) != 1 {
		t.Fatalf("allocation check: handshake: events %#x, %d host sockets", h.conns[i].events, len(w.host))
	}
	hfd := w.host[0]
	const plen = 1000
	dp, _ := fuzzFrame(w.bufs[2], &k, gseq, hseq, flagACK, 65535, nil, plen, 'x')
	ap, _ := fuzzFrame(w.bufs[3], &k, gseq, hseq, flagACK, 65535, nil, 0, 0)
	dps, aps := []packet.Packet{dp}, []packet.Packet{ap}
	var bad string
	// step is one round trip; it records what went wrong in bad rather
	// than failing, as AllocsPerRun's function cannot.
	step := func() {
		tcp := header.TCP(dps[0].L4Bytes())
		tcp.SetSeq(gseq)
		tcp.SetAck(hseq)
		h.FromGuest(dps)
		gseq += plen
		if u.out.Queued() != 1 || queuedTCP(t, u.out, 0).Ack() != gseq {
			bad = "guest data not acknowledged"
		}
		u.out.Flush()
		if !w.readHost(hfd, plen) {
			bad = "guest data not on the host socket"
		}
		unix.Write(hfd, w.io[:plen])
		for n := 0; n < 10 && u.out.Queued() == 0; n++ {
			u.l.Turn(10 * time.Millisecond)
		}
		if u.out.Queued() != 1 || queuedTCP(t, u.out, 0).PayloadLen() != plen || queuedTCP(t, u.out, 0).Seq() != hseq {
			bad = "host data not sent"
		}
		hseq += plen
		u.out.Flush()
		tcp = header.TCP(aps[0].L4Bytes())
		tcp.SetSeq(gseq)
		tcp.SetAck(hseq)
		h.FromGuest(aps)
		u.out.Flush()
	}
	step()
	allocs := testing.AllocsPerRun(50, step)
	if bad != "" {
		t.Fatalf("allocation check: %s", bad)
	}
	if allocs != 0 {
		t.Fatalf("allocation check: %v allocations per round trip after %d inputs, want 0", allocs, w.runs)
	}
	w.cleanup(t)
}

// readHost reads n bytes from the non-blocking host socket fd, waiting
// up to 100 ms for them (loopback delivers at once, but not under every
// load). Reports whether they came.
func (w *fuzzWorld) readHost(fd, n int) bool {
	got := 0
	for try := 0; got < n && try < 10; try++ {
		m, err := unix.Read(fd, w.io[got:n])
		if m > 0 {
			got += m
			continue
		}
		if err != unix.EAGAIN {
			return false
		}
		w.pfd[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		unix.Poll(w.pfd, 10)
	}
	return got == n
}

// fuzzSeedBuilder writes seed inputs in the input format.
type fuzzSeedBuilder struct {
	recs []byte
	n    int
}

// seg adds a segment record for selector sel (tuple, or active position
// with op 4): flags fl, sequence delta sd, ACK mode am (b3), ACK delta
// ad, window wnd, option template opt with parameter par, payload plen.
func (b *fuzzSeedBuilder) seg(sel, fl byte, sd int8, am byte, ad int8, wnd uint16, opt, par byte, plen int) *fuzzSeedBuilder {
	r := []byte{sel, fl, byte(sd), am, byte(ad), byte(wnd >> 8), byte(wnd), opt, par, byte(plen), 0, 'p'}
	if plen > 255 {
		binary.BigEndian.PutUint16(r[9:], uint16(plen)|0x8000)
	}
	b.recs = append(b.recs, r...)
	b.n++
	return b
}

// host adds host action act on host socket idx with size n.
func (b *fuzzSeedBuilder) host(act, idx byte, n uint16) *fuzzSeedBuilder {
	b.recs = append(b.recs, 5<<5, act, idx, byte(n>>8), byte(n), 0, 0, 0, 0, 0, 0, 0)
	b.n++
	return b
}

// time adds time action act with argument arg.
func (b *fuzzSeedBuilder) time(act, arg byte) *fuzzSeedBuilder {
	b.recs = append(b.recs, 6<<5, act, arg, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	b.n++
	return b
}

// deliver adds a delivery of the pending batch.
func (b *fuzzSeedBuilder) deliver() *fuzzSeedBuilder {
	b.recs = append(b.recs, 7<<5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	b.n++
	return b
}

// handshake adds an outbound handshake on tuple sel: SYN with MSS and
// window scale, delivered, a loop turn (should the connect not be done
// yet), then the ACK of our SYN+ACK, pending.
func (b *fuzzSeedBuilder) handshake(sel byte) *fuzzSeedBuilder {
	return b.seg(sel, flagSYN, 0, 0, 0, 65535, 2, 7, 0).deliver().time(0, 0).seg(sel, flagACK, 0, 0, 0, 65535, 0, 0, 0)
}

// bytes returns the seed: the record count, the records, and raw.
func (b *fuzzSeedBuilder) bytes(raw ...byte) []byte {
	return append(append([]byte{byte(b.n)}, b.recs...), raw...)
}

// fuzzSeeds returns the seed corpus: a SYN; a handshake with data both
// ways; FINs both ways; resets in and out of the window; a zero window
// with a probe; bad options and a malformed raw TCP header; an inbound
// connection; and a whole raw IPv6 frame.
func fuzzSeeds() [][]byte {
	const v6, closed = 16, 8
	var seeds [][]byte
	add := func(b []byte) { seeds = append(seeds, b) }
	add(new(fuzzSeedBuilder).seg(0, flagSYN, 0, 0, 0, 65535, 2, 7, 0).deliver().bytes())
	add(new(fuzzSeedBuilder).handshake(1).seg(1, flagACK|flagPSH, 0, 0, 0, 65535, 0, 0, 100).deliver().
		host(2, 0, 100).time(0, 0).seg(1, flagACK, 0, 0, 0, 65535, 0, 0, 0).deliver().bytes())
	add(new(fuzzSeedBuilder).handshake(2).seg(2, flagFIN|flagACK, 0, 0, 0, 65535, 0, 0, 10).deliver().
		host(3, 0, 0).time(0, 0).seg(2, flagACK, 0, 2, 0, 65535, 0, 0, 0).deliver().bytes())
	add(new(fuzzSeedBuilder).handshake(3).seg(3, flagRST, 0, 0, 0, 0, 0, 0, 0).
		seg(4|v6, flagSYN, 0, 0, 0, 65535, 1, 5, 0).deliver().seg(4|v6, flagACK, 0, 0, 0, 65535, 0, 0, 0).
		seg(4|v6, flagRST, 100, 0x0c, 0, 0, 0, 0, 0).deliver().bytes())
	add(new(fuzzSeedBuilder).handshake(5).deliver().host(0, 0, 30000).time(0, 0).
		seg(5, flagACK, 0, 1, 0, 0, 0, 0, 0).deliver().time(2, 0).time(4, 0).
		seg(5, flagACK, -1, 0, 0, 0, 0, 0, 0).seg(5, flagACK, 0, 0, 0, 65535, 0, 0, 0).deliver().bytes())
	add(new(fuzzSeedBuilder).seg(6, flagSYN, 0, 0, 0, 65535, 4, 0, 0).seg(6|closed|v6, flagSYN, 0, 0, 0, 65535, 6, 9, 0).
		seg(7, flagSYN, 0, 0, 0, 65535, 7, 1, 0).deliver().seg(7, flagACK, 0, 0, 0, 65535, 5, 3, 0).
		bytes(1, 0x9c, 0x41, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, flagSYN, 0xff, 0xff, 0, 0, 0, 0, header.TCPOptWS, 7, 1, 1))
	add(new(fuzzSeedBuilder).host(8, 0, 0).host(9, 0, 0).time(0, 0).
		seg(4<<5, flagSYN|flagACK, 0, 0, 0, 65535, 2, 7, 0).seg(4<<5|1, flagSYN|flagACK, 0, 0, 0, 65535, 1, 0, 0).deliver().
		host(0, 0, 5000).time(1, 0).seg(4<<5, flagACK, 0, 0, 0, 65535, 0, 0, 50).deliver().bytes())
	k := flow.Key{Proto: header.ProtoTCP, Src: guest6.As16(), Dst: gw6.As16(), SrcPort: 40200, DstPort: 2}
	f := make([]byte, 200)
	p, _ := fuzzFrame(f, &k, 77, 0, flagSYN, 1000, []byte{2, 4, 5, 0xb4}, 0, 0)
	add(new(fuzzSeedBuilder).bytes(append([]byte{0}, p.Frame...)...))
	return seeds
}
