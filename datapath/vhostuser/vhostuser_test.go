// Tests of the vhost-user back end against the package's minimal front end
// (frontend_test.go): the handshake and its replies, frames both ways with
// their bytes checked, mergeable buffers, offloads carried or done here,
// hostile rings, reconnect, and no allocation per frame.

package vhostuser

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"gopasst/checksum"
	"gopasst/datapath/tap"
)

const allBut = ^uint64(0)

func newBackend(t *testing.T) *Backend {
	b := New(-1, -1, false, 16, nil)
	b.listen = 99999 // not -1: a hang-up is EventDown, not ErrDone (never accepted on)
	t.Cleanup(func() { b.listen = -1; b.Close() })
	return b
}

// testFrame returns an Ethernet frame of n bytes with a recognisable body.
func testFrame(n int, seed byte) []byte {
	f := make([]byte, n)
	copy(f, []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5})
	for i := 14; i < n; i++ {
		f[i] = byte(i) ^ seed
	}
	return f
}

func TestHandshakeAndUp(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut)
	if fe.events&tap.EventUp == 0 {
		t.Fatalf("no EventUp after the start sequence (events %#x)", fe.events)
	}
	if !b.rxUp() || !b.vq[txQ].ready() {
		t.Fatal("rings not in service")
	}
	if b.vnetLen != 12 {
		t.Fatalf("vnet header %d", b.vnetLen)
	}
	// GET_VRING_BASE stops the ring and says where it stood.
	fe.send(reqGetVringBase, 0, state(1, 0))
	p := fe.reply(reqGetVringBase)
	if binary.NativeEndian.Uint32(p) != 1 || binary.NativeEndian.Uint32(p[4:]) != 0 {
		t.Fatalf("GET_VRING_BASE %x", p)
	}
	if b.vq[txQ].ready() {
		t.Fatal("TX ring still served after GET_VRING_BASE")
	}
	// REPLY_ACK on an ordinary request.
	fe.send(reqSetOwner, flagNeedReply, nil)
	if v := binary.NativeEndian.Uint64(fe.reply(reqSetOwner)); v != 0 {
		t.Fatalf("SET_OWNER ack %d", v)
	}
}

func TestTX(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut)
	frames := make([][]byte, 64)
	sizes := []int{60, 1514, 9000, 65535 + 14}
	for i, n := range sizes {
		f := testFrame(n, byte(i))
		piece := 0
		if i == 3 {
			piece = 4096 // scattered: copied out
		}
		fe.sendTX(uint16(i*20), f, piece)
		ev, err := b.Ready(idxKick+txQ, unix.EPOLLIN)
		if err != nil || ev&tap.EventFrames == 0 {
			t.Fatalf("TX kick: %v %v", ev, err)
		}
		got, err := b.Read(frames)
		if err != nil || got != 1 {
			t.Fatalf("Read: %d frames, %v", got, err)
		}
		if !bytes.Equal(frames[0], f) {
			t.Fatalf("frame %d: %d bytes differ from the %d sent", i, len(frames[0]), n)
		}
		if fe.inBackendMem(frames[0]) {
			t.Fatalf("frame %d: handed out in guest memory, not a private copy", i)
		}
		// The guest rewriting its buffer (another vCPU) changes
		// nothing of what we read.
		clear(fe.gpaBytes(feGPA+feTxBufOff+uint64(i*20)*0x12000, 12+n))
		if !bytes.Equal(frames[0], f) {
			t.Fatalf("frame %d changed with the guest's buffer", i)
		}
		b.Flush()
		if fe.usedIdx(txQ) != uint16(i+1) {
			t.Fatalf("TX used index %d after %d frames", fe.usedIdx(txQ), i+1)
		}
		if id, l := fe.usedEntry(txQ, uint16(i)); id != uint32(i*20) || l != 0 {
			t.Fatalf("TX used entry %d/%d", id, l)
		}
	}
	if fe.calls(txQ) == 0 {
		t.Fatal("no TX interrupt")
	}
	if b.Stats.FramesIn != 4 || b.Stats.Linearized != 1 {
		t.Fatalf("stats %+v", b.Stats)
	}
}

func TestRXMergeable(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut)
	fe.postRX(200, feBufSize)
	var want [][]byte
	for i, n := range []int{42, 1514, 4096, 20000} {
		f := b.Frame()
		copy(f, testFrame(n, byte(i)))
		b.Commit(n)
		w := testFrame(n, byte(i))
		if n < 60 {
			// No padding asked for: the guest gets what we sent.
		}
		want = append(want, w)
	}
	fe.calls(rxQ)
	b.Flush()
	if fe.calls(rxQ) != 1 {
		t.Fatal("not exactly one RX interrupt for the batch")
	}
	hdrs, got := fe.recvRX(feBufSize)
	if len(got) != len(want) {
		t.Fatalf("%d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d: %d bytes, differ from the %d sent", i, len(got[i]), len(want[i]))
		}
		if hdrs[i][0] != 0 || hdrs[i][1] != 0 {
			t.Fatalf("frame %d: header %x", i, hdrs[i])
		}
	}
	if b.Stats.MergedFrames != 2 {
		t.Fatalf("merged %d", b.Stats.MergedFrames)
	}
}

// tcpFrame builds an IPv4 or IPv6 TCP frame with plen payload bytes and
// the pseudo-header sum in the checksum field (partial), as the TCP path
// builds super-frames.
func tcpFrame(v6 bool, plen int) []byte {
	l3 := 20
	if v6 {
		l3 = 40
	}
	f := make([]byte, 14+l3+20+plen)
	copy(f, []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2})
	ip := f[14:]
	tl := 20 + plen
	if v6 {
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(tl))
		ip[6], ip[7] = 6, 64
		ip[23], ip[39] = 1, 2
	} else {
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+tl))
		binary.BigEndian.PutUint16(ip[4:], 7)
		ip[8], ip[9] = 64, 6
		copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
		binary.BigEndian.PutUint16(ip[10:], checksum.Checksum(ip[:20], 0))
	}
	t := f[14+l3:]
	binary.BigEndian.PutUint16(t, 80)
	binary.BigEndian.PutUint16(t[2:], 40000)
	binary.BigEndian.PutUint32(t[4:], 1000)
	t[12], t[13] = 5<<4, 0x18 // ACK PSH
	for i := 20; i < len(t); i++ {
		t[i] = byte(i * 7)
	}
	var pseudo uint16
	if v6 {
		pseudo = checksum.PseudoHeaderIPv6((*[16]byte)(ip[8:24]), (*[16]byte)(ip[24:40]), 6, uint32(tl))
	} else {
		pseudo = checksum.PseudoHeaderIPv4([4]byte(ip[12:16]), [4]byte(ip[16:20]), 6, uint16(tl))
	}
	binary.BigEndian.PutUint16(t[16:], pseudo)
	return f
}

// checkTCP verifies frame f's checksums and returns its sequence number
// and payload.
func checkTCP(t *testing.T, f []byte, v6 bool) (uint32, []byte) {
	t.Helper()
	l3 := 20
	if v6 {
		l3 = 40
	}
	ip := f[14 : 14+l3]
	tcp := f[14+l3:]
	var pseudo uint16
	if v6 {
		if int(binary.BigEndian.Uint16(ip[4:])) != len(tcp) {
			t.Fatalf("IPv6 payload length %d, frame has %d", binary.BigEndian.Uint16(ip[4:]), len(tcp))
		}
		pseudo = checksum.PseudoHeaderIPv6((*[16]byte)(ip[8:24]), (*[16]byte)(ip[24:40]), 6, uint32(len(tcp)))
	} else {
		if checksum.Checksum(ip, 0) != 0 {
			t.Fatal("bad IPv4 header checksum")
		}
		if int(binary.BigEndian.Uint16(ip[2:])) != 20+len(tcp) {
			t.Fatal("bad IPv4 total length")
		}
		pseudo = checksum.PseudoHeaderIPv4([4]byte(ip[12:16]), [4]byte(ip[16:20]), 6, uint16(len(tcp)))
	}
	if checksum.Checksum(tcp, pseudo) != 0 {
		t.Fatal("bad TCP checksum")
	}
	return binary.BigEndian.Uint32(tcp[4:]), tcp[20:]
}

func TestRXOffloads(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		segments int
	}{
		{"carried", allBut, 1},
		{"checksum-only", allBut &^ (fNetGuestTSO4 | fNetGuestTSO6), 45},
		{"none", allBut &^ (fNetGuestTSO4 | fNetGuestTSO6 | fNetGuestCsum), 45},
	} {
		for _, v6 := range []bool{false, true} {
			t.Run(tc.name, func(t *testing.T) {
				b := newBackend(t)
				fe := newFrontEnd(t, b)
				fe.start(tc.features)
				fe.postRX(250, feBufSize)
				const plen = 1460*44 + 100
				src := tcpFrame(v6, plen)
				f := b.Frame()
				copy(f, src)
				l3 := 20
				gso := uint8(tap.GSOTCPv4)
				if v6 {
					l3, gso = 40, tap.GSOTCPv6
				}
				h := tap.VnetHdr{Flags: tap.VnetNeedsCsum, GSOType: gso, GSOSize: 1460, HdrLen: uint16(14 + l3 + 20), CsumStart: uint16(14 + l3), CsumOffset: 16}
				b.CommitOffload(len(src), &h)
				b.Flush()
				hdrs, got := fe.recvRX(feBufSize)
				if len(got) != tc.segments {
					t.Fatalf("%d frames, want %d (stats %+v)", len(got), tc.segments, b.Stats)
				}
				if tc.segments == 1 {
					if !bytes.Equal(got[0], src) || hdrs[0][1] != gso || binary.LittleEndian.Uint16(hdrs[0][4:]) != 1460 {
						t.Fatalf("super-frame not carried as is: header %x", hdrs[0])
					}
					return
				}
				var payload []byte
				seq := uint32(1000)
				for i, g := range got {
					s, p := checkTCP(t, g, v6)
					if s != seq {
						t.Fatalf("segment %d: seq %d, want %d", i, s, seq)
					}
					if len(p) > 1460 {
						t.Fatalf("segment %d: %d bytes", i, len(p))
					}
					seq += uint32(len(p))
					payload = append(payload, p...)
				}
				if !bytes.Equal(payload, src[14+l3+20:]) {
					t.Fatal("payload differs after segmentation")
				}
			})
		}
	}
}

func TestRXNotMergeable(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut &^ fNetMrgRxbuf)
	fe.postRX(4, 2048)
	for i, n := range []int{1500, 3000, 2000} {
		f := b.Frame()
		copy(f, testFrame(n, byte(i)))
		b.Commit(n)
	}
	b.Flush()
	_, got := fe.recvRX(2048)
	if len(got) != 2 || len(got[0]) != 1500 || len(got[1]) != 2000 {
		t.Fatalf("got %d frames", len(got))
	}
	if b.Stats.DroppedOut != 1 {
		t.Fatalf("dropped %d", b.Stats.DroppedOut)
	}
	// The chain the large frame did not fit was given back: two left.
	if b.vq[rxQ].pending() != 2 {
		t.Fatalf("pending %d", b.vq[rxQ].pending())
	}
}

func TestRXBackpressure(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut)
	bufs := make([][]byte, 8)
	if n := b.Reserve(bufs); n != 0 {
		t.Fatalf("Reserve gave %d buffers with no RX buffers posted", n)
	}
	fe.postRX(64, feBufSize)
	fe.kickQ(rxQ)
	ev, _ := b.Ready(idxKick+rxQ, unix.EPOLLIN)
	if ev&tap.EventWritable == 0 {
		t.Fatalf("no EventWritable after buffers came (%#x)", ev)
	}
	if n := b.Reserve(bufs); n == 0 {
		t.Fatal("Reserve still refuses")
	}
}

func TestHostileRings(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut)
	frames := make([][]byte, 8)
	tx := func() int {
		b.Ready(idxKick+txQ, unix.EPOLLIN)
		n, err := b.Read(frames)
		if err != nil {
			t.Fatal(err)
		}
		b.Flush()
		return n
	}
	// A descriptor outside guest memory.
	fe.desc(txQ, 0, 0x1000, 100, 0, 0)
	fe.offer(txQ, 0)
	// A loop.
	fe.desc(txQ, 1, feGPA+feTxBufOff, 100, descNext, 2)
	fe.desc(txQ, 2, feGPA+feTxBufOff, 100, descNext, 1)
	fe.offer(txQ, 1)
	// A length past the end of memory.
	fe.desc(txQ, 3, feGPA+feMemSize-10, 100, 0, 0)
	fe.offer(txQ, 3)
	// A huge length.
	fe.desc(txQ, 4, feGPA, 0xffffffff, 0, 0)
	fe.offer(txQ, 4)
	// A head out of range; next out of range; a writable buffer.
	fe.offer(txQ, 999)
	fe.desc(txQ, 5, feGPA+feTxBufOff, 100, descNext, 300)
	fe.offer(txQ, 5)
	fe.desc(txQ, 6, feGPA+feTxBufOff, 100, descWrite, 0)
	fe.offer(txQ, 6)
	if n := tx(); n != 0 {
		t.Fatalf("%d frames from hostile chains", n)
	}
	if b.Stats.BadChains != 7 {
		t.Fatalf("bad chains %d, want 7", b.Stats.BadChains)
	}
	// A good frame after them goes through.
	f := testFrame(100, 9)
	fe.sendTX(20, f, 0)
	if n := tx(); n != 1 || !bytes.Equal(frames[0], f) {
		t.Fatalf("good frame after hostile ones: %d", n)
	}
	// RX: a buffer outside memory, then a good one.
	fe.desc(rxQ, 0, 0xdead0000, 4096, descWrite, 0)
	fe.offer(rxQ, 0)
	fe.desc(rxQ, 1, feGPA+feBufOff, 4096, descWrite, 0)
	fe.offer(rxQ, 1)
	copy(b.Frame(), testFrame(500, 1))
	b.Commit(500)
	b.Flush()
	if id, l := fe.usedEntry(rxQ, 0); id != 0 || l != 0 {
		t.Fatalf("bad RX chain not given back unused: %d %d", id, l)
	}
	if id, l := fe.usedEntry(rxQ, 1); id != 1 || l != 512 {
		t.Fatalf("good RX chain: %d %d", id, l)
	}
	// An avail index far ahead stops the ring.
	_, a, _ := ringAddr(txQ)
	binary.LittleEndian.PutUint16(fe.mem[a+2:], fe.availIdx[txQ]+1000)
	tx()
	if !b.vq[txQ].bad || b.Stats.BrokenRings != 1 {
		t.Fatal("ring with a runaway avail index not stopped")
	}
	// A size that is not a power of 2 is refused (REPLY_ACK 1 would come
	// with NEED_REPLY; here: the ring stays out of service).
	fe.send(reqSetVringNum, flagNeedReply, state(0, 300))
	if v := binary.NativeEndian.Uint64(fe.reply(reqSetVringNum)); v != 1 {
		t.Fatalf("SET_VRING_NUM 300 acked %d", v)
	}
	if b.rxUp() {
		t.Fatal("ring of size 300 served")
	}
	// Rings outside memory are refused.
	fe.send(reqSetVringNum, 0, state(0, 256))
	p := make([]byte, 40)
	binary.NativeEndian.PutUint64(p[8:], feQVA+feMemSize-100)
	binary.NativeEndian.PutUint64(p[16:], feQVA)
	binary.NativeEndian.PutUint64(p[24:], feQVA)
	fe.send(reqSetVringAddr, flagNeedReply, p)
	if v := binary.NativeEndian.Uint64(fe.reply(reqSetVringAddr)); v != 1 {
		t.Fatalf("ring outside memory acked %d", v)
	}
	// A fresh configuration works again.
	fe.setupRing(txQ, 256)
	fe.send(reqSetVringEnable, 0, state(1, 1))
	fe.sendTX(0, f, 0)
	if n := tx(); n != 1 || !bytes.Equal(frames[0], f) {
		t.Fatalf("after reconfiguring: %d frames", n)
	}
}

func TestProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  uint32
		p    []byte
	}{
		{"unknown request", 77, nil},
		{"short payload", reqSetVringNum, []byte{1, 2, 3}},
		{"queue index", reqSetVringNum, state(2, 256)},
		{"kick without fd", reqSetVringKick, u64(vringNoFD)},
		{"memory table without fds", reqSetMemTable, append(state(1, 0), make([]byte, 32)...)},
		{"log base", reqSetLogBase, make([]byte, 16)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			fe := newFrontEnd(t, b)
			m := make([]byte, hdrLen+len(tc.p))
			binary.NativeEndian.PutUint32(m[0:], tc.req)
			binary.NativeEndian.PutUint32(m[4:], flagVersion)
			binary.NativeEndian.PutUint32(m[8:], uint32(len(tc.p)))
			copy(m[hdrLen:], tc.p)
			unix.Write(fe.sock, m)
			ev, err := b.Ready(idxConn, unix.EPOLLIN)
			if err != nil || ev != tap.EventDown || b.Connected() {
				t.Fatalf("got %v %v, connected %v", ev, err, b.Connected())
			}
		})
	}
}

func TestReconnect(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut)
	unix.Close(fe.sock)
	ev, err := b.Ready(idxConn, unix.EPOLLIN|unix.EPOLLHUP)
	if err != nil || ev != tap.EventDown {
		t.Fatalf("hang-up: %v %v", ev, err)
	}
	if b.mem.n != 0 || b.vq[0].kick >= 0 || b.vq[1].call >= 0 {
		t.Fatal("state left after the hang-up")
	}
	// Frames towards nobody are dropped.
	copy(b.Frame(), testFrame(100, 0))
	b.Commit(100)
	fe2 := newFrontEnd(t, b)
	fe2.start(allBut)
	if fe2.events&tap.EventUp == 0 {
		t.Fatal("no EventUp for the second front end")
	}
	f := testFrame(1000, 3)
	fe2.sendTX(0, f, 0)
	frames := make([][]byte, 4)
	if n, _ := b.Read(frames); n != 1 || !bytes.Equal(frames[0], f) {
		t.Fatal("second front end: no frame")
	}
	// One-off: the hang-up ends the run.
	b.oneOff = true
	unix.Close(fe2.sock)
	if _, err := b.Ready(idxConn, unix.EPOLLIN); !errors.Is(err, tap.ErrDone) {
		t.Fatalf("one-off hang-up: %v", err)
	}
}

func TestListenAccept(t *testing.T) {
	path := t.TempDir() + "/vu.sock"
	lfd, _, err := tap.ListenStream(path)
	if err != nil {
		t.Fatal(err)
	}
	b := New(lfd, -1, false, 4, nil)
	defer b.Close()
	w := &watcher{fds: map[uint32]int{}}
	b.Watch(w)
	dial := func() int {
		fd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			t.Fatal(err)
		}
		b.Ready(idxListen, unix.EPOLLIN)
		return fd
	}
	c1 := dial()
	defer unix.Close(c1)
	if !b.Connected() {
		t.Fatal("not connected")
	}
	c2 := dial()
	defer unix.Close(c2)
	var buf [1]byte
	if n, _ := unix.Read(c2, buf[:]); n != 0 || b.Stats.Refused != 1 {
		t.Fatal("second front end not refused")
	}
	// The first goes and a third comes before the loop saw the hang-up:
	// the third is served, the first's end reported.
	unix.Close(c1)
	fd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if ev, err := b.Ready(idxListen, unix.EPOLLIN); err != nil || ev != tap.EventDown || b.Stats.Connects != 2 || b.Stats.Refused != 1 {
		t.Fatalf("third front end: %v %v, stats %+v", ev, err, b.Stats)
	}
}

func TestNoAllocs(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut)
	frames := make([][]byte, 8)
	f := testFrame(1500, 1)
	src := tcpFrame(false, 1460*10)
	h := tap.VnetHdr{Flags: tap.VnetNeedsCsum, GSOType: tap.GSOTCPv4, GSOSize: 1460, HdrLen: 54, CsumStart: 34, CsumOffset: 16}
	bufs := make([][]byte, 4)
	seg := tcpFrame(false, 8000) // split: payload from the guest's buffer
	iov := make([]unix.Iovec, 2)
	allocs := testing.AllocsPerRun(200, func() {
		fe.sendTX(0, f, 0)
		fe.sendTX(20, seg, 0)
		b.Ready(idxKick+txQ, unix.EPOLLIN)
		b.Read(frames)
		b.PayloadIovecs(frames[1][54:], iov)
		fe.postRX(5, feBufSize) // what a round takes: 1 + 4 buffers
		b.Reserve(bufs)
		copy(bufs[0], f)
		b.Commit(len(f))
		copy(b.Frame(), src)
		b.CommitOffload(len(src), &h)
		b.Flush()
		fe.usedSeen[rxQ] = fe.usedIdx(rxQ)
		fe.calls(rxQ)
		fe.calls(txQ)
	})
	// The front end's own calls (eventfd write and read) allocate
	// nothing either; anything counted is the back end's.
	if allocs != 0 {
		t.Fatalf("%.1f allocations per round", allocs)
	}
	if b.Stats.FramesOut != 402 || b.Stats.DroppedOut != 0 || b.Stats.Split != 201 {
		t.Fatalf("frames out %d, dropped %d, split %d", b.Stats.FramesOut, b.Stats.DroppedOut, b.Stats.Split)
	}
}

// postRXGaps posts n RX buffers of size bytes each, with a gap after each
// one: never end to end, so no direct view is possible.
func (fe *frontEnd) postRXGaps(n int, size uint32) {
	for i := 0; i < n; i++ {
		head := uint16(int(fe.availIdx[rxQ]) % int(fe.num[rxQ]))
		fe.desc(rxQ, head, feGPA+feBufOff+uint64(head)*uint64(size+64), size, descWrite, 0)
		fe.offer(rxQ, head)
	}
}

func TestRXDirect(t *testing.T) {
	for _, gaps := range []bool{false, true} {
		b := newBackend(t)
		fe := newFrontEnd(t, b)
		fe.start(allBut)
		if gaps {
			fe.postRXGaps(250, feBufSize)
		} else {
			fe.postRX(250, feBufSize)
		}
		bufs := make([][]byte, 3)
		var want [][]byte
		// Three rounds: a big frame, a small one, one reserved and not
		// committed (its chains come back at Flush).
		for round, n := range []int{60000, 300, 20000} {
			got := b.Reserve(bufs)
			if got != 3 {
				t.Fatalf("Reserve: %d", got)
			}
			// The first round is direct (buffers end to end); the
			// next may start at a hole the one before left, which
			// its staged frame fills.
			if direct := fe.inBackendMem(bufs[0]); round == 0 && direct == gaps {
				t.Fatalf("gaps %v round %d: direct view %v (pool %d, backoff %d, pending %d)", gaps, round, direct, b.rx.poolN, b.rx.backoff, b.vq[rxQ].pending())
			}
			f := testFrame(n, byte(round))
			copy(bufs[0], f)
			b.Commit(n)
			want = append(want, f)
			g := testFrame(1000, byte(round+10))
			copy(bufs[1], g)
			b.Commit(1000)
			want = append(want, g)
			b.Flush()
		}
		_, got := fe.recvRX(feBufSize)
		if len(got) != len(want) {
			t.Fatalf("gaps %v: %d frames, want %d", gaps, len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("gaps %v: frame %d: %d bytes differ from the %d sent", gaps, i, len(got[i]), len(want[i]))
			}
		}
		// Every chain not written to is back in the avail ring, or
		// kept for the next frames: none lost.
		used := uint16(fe.usedIdx(rxQ))
		if p := b.vq[rxQ].pending(); p+int(used)+b.rx.poolN != 250 {
			t.Fatalf("gaps %v: %d used, %d pending, %d spare: chains lost", gaps, used, p, b.rx.poolN)
		}
		if (!gaps && b.Stats.DirectOut < 3) || (gaps && b.Stats.DirectOut != 0) {
			t.Fatalf("gaps %v: %d direct frames", gaps, b.Stats.DirectOut)
		}
	}
}

// TestRXDirectSteady plays a bulk transfer towards the guest: reservations
// of large frames, the guest refilling what it was given, buffers end to
// end in its memory. Most frames must go straight into guest memory, every
// byte must arrive, and no chain may be lost.
func TestRXDirectSteady(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut)
	fe.postRX(256, feBufSize)
	bufs := make([][]byte, 4)
	sent := 0
	for round := 0; round < 200; round++ {
		got := b.Reserve(bufs)
		for i := 0; i < got; i++ {
			n := 65000 - (round*7+i)%3000
			copy(bufs[i], testFrame(n, byte(round+i)))
			b.Commit(n)
			sent++
		}
		b.Flush()
		_, frames := fe.recvRX(feBufSize)
		for i, f := range frames {
			if len(f) < 62000 || !bytes.Equal(f[14:100], testFrame(len(f), byte(f[14]^14))[14:100]) {
				t.Fatalf("round %d frame %d: %d bytes, wrong", round, i, len(f))
			}
		}
		fe.repostRX()
		if used, p := fe.usedIdx(rxQ), b.vq[rxQ].pending(); int(uint16(fe.availIdx[rxQ]-b.vq[rxQ].lastAvail)) != p || p+b.rx.poolN > 256 {
			t.Fatalf("round %d: used %d pending %d spares %d", round, used, p, b.rx.poolN)
		}
	}
	if b.Stats.FramesOut != uint64(sent) || b.Stats.DroppedOut != 0 {
		t.Fatalf("sent %d, out %d, dropped %d", sent, b.Stats.FramesOut, b.Stats.DroppedOut)
	}
	if b.Stats.DirectOut*10 < b.Stats.FramesOut*8 {
		t.Fatalf("only %d of %d frames direct", b.Stats.DirectOut, b.Stats.FramesOut)
	}
	t.Logf("%d frames, %d direct, spares at the end %d", b.Stats.FramesOut, b.Stats.DirectOut, b.rx.poolN)
}

// TestRXFit checks that Reserve gives no buffer the guest's posted chains
// cannot hold: with three 4 KiB chains left, a producer that could write
// 64 KiB gets nothing (and hears when there is room), rather than a
// buffer whose frame would be dropped.
func TestRXFit(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut)
	fe.postRX(20, feBufSize)
	bufs := make([][]byte, 8)
	for round := 0; round < 2; round++ {
		n := b.Reserve(bufs)
		if round == 0 && n == 0 {
			t.Fatal("Reserve refused with 20 chains posted")
		}
		if round == 1 && n != 0 {
			t.Fatalf("Reserve gave %d buffers for %d chains left", n, b.vq[rxQ].pending()+b.rx.poolN)
		}
		if n > 0 {
			copy(bufs[0], testFrame(65000, 1))
			b.Commit(65000)
		}
		b.Flush()
	}
	if b.Stats.DroppedOut != 0 || !b.rx.refused {
		t.Fatalf("dropped %d, refused %v", b.Stats.DroppedOut, b.rx.refused)
	}
	fe.recvRX(feBufSize)
	fe.repostRX()
	fe.kickQ(rxQ)
	if ev, _ := b.Ready(idxKick+rxQ, unix.EPOLLIN); ev&tap.EventWritable == 0 {
		t.Fatalf("no EventWritable once the guest refilled (%#x)", ev)
	}
	if n := b.Reserve(bufs); n == 0 {
		t.Fatal("Reserve refuses after the refill")
	}
}

// TestMemPastFile checks that a region larger than its file is refused
// (REPLY_ACK 1): touching a mapping past the end of a file is SIGBUS.
func TestMemPastFile(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut)
	if err := unix.Ftruncate(fe.memfd, feMemSize/2); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 8+32)
	binary.NativeEndian.PutUint32(p, 1)
	binary.NativeEndian.PutUint64(p[8:], feGPA)
	binary.NativeEndian.PutUint64(p[16:], feMemSize)
	binary.NativeEndian.PutUint64(p[24:], feQVA)
	fe.send(reqSetMemTable, flagNeedReply, p, fe.memfd)
	if v := binary.NativeEndian.Uint64(fe.reply(reqSetMemTable)); v != 1 {
		t.Fatalf("region past the end of its file acked %d", v)
	}
	if b.rxUp() || b.mem.n != 0 {
		t.Fatal("rings served without memory")
	}
	copy(b.Frame(), testFrame(100, 0))
	b.Commit(100)
	b.Flush()
}

// TestNoAllocsFallbacks is TestNoAllocs for the paths a less capable
// guest takes: scattered buffers (staging, no direct view), no offloads
// (checksums completed and super-frames segmented here), no mergeable
// buffers, no event-idx.
func TestNoAllocsFallbacks(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut &^ (fNetGuestTSO4 | fNetGuestTSO6 | fNetGuestCsum | fNetMrgRxbuf | fRingEventIdx))
	src := tcpFrame(true, 1460*6)
	h := tap.VnetHdr{Flags: tap.VnetNeedsCsum, GSOType: tap.GSOTCPv6, GSOSize: 1460, HdrLen: 74, CsumStart: 54, CsumOffset: 16}
	bufs := make([][]byte, 2)
	frames := make([][]byte, 4)
	f := testFrame(1500, 2)
	allocs := testing.AllocsPerRun(100, func() {
		fe.postRXGaps(7, 2048) // 6 segments + 1 frame
		if n := b.Reserve(bufs); n == 0 {
			t.Fatal("Reserve refused")
		}
		copy(bufs[0], src)
		b.CommitOffload(len(src), &h)
		copy(b.Frame(), f)
		b.Commit(len(f))
		fe.sendTX(0, f, 700) // scattered
		b.Read(frames)
		b.Flush()
		fe.usedSeen[rxQ] = fe.usedIdx(rxQ)
		fe.calls(rxQ)
		fe.calls(txQ)
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per round", allocs)
	}
	if b.Stats.SoftSegments < 600 || b.Stats.DirectOut != 0 || b.Stats.DroppedOut != 0 || b.Stats.Linearized < 100 {
		t.Fatalf("paths not taken: %+v", b.Stats)
	}
}

// TestStopAccountsChains checks that GET_VRING_BASE reports an avail index
// that accounts for every chain: each one before it is in the used ring
// (written, or given back unused), none is lost in the back end's hands,
// whatever the back end held (a reserved run, the pool).
func TestStopAccountsChains(t *testing.T) {
	for _, holes := range []bool{false, true} {
		b := newBackend(t)
		fe := newFrontEnd(t, b)
		fe.start(allBut)
		fe.postRX(60, feBufSize)
		bufs := make([][]byte, 2)
		if n := b.Reserve(bufs); n != 2 {
			t.Fatalf("Reserve %d", n)
		}
		copy(bufs[0], testFrame(3000, 1))
		b.Commit(3000)
		if holes {
			// A committed frame after the held chains: no rewind.
			copy(bufs[1], testFrame(100, 2))
			b.Commit(100)
			copy(b.Frame(), testFrame(5000, 3))
			b.Commit(5000)
		}
		fe.send(reqGetVringBase, 0, state(0, 0))
		base := binary.NativeEndian.Uint32(fe.reply(reqGetVringBase)[4:])
		if used := fe.usedIdx(rxQ); uint32(used) != base {
			t.Fatalf("holes %v: base %d, but %d used entries", holes, base, used)
		}
	}
}
