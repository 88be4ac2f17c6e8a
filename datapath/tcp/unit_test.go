// Unit tests with a fake guest (hand-built segments, taptest's recording
// back end) and real host sockets, and the allocation test of the steady
// state.

package tcp

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/checksum"
	"gopasst/datapath/config"
	"gopasst/datapath/flow"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/loop"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap/taptest"
)

// queuedTCP returns frame i queued towards the guest (not flushed yet) as
// a TCP view, failing t if it is not a TCP frame.
func queuedTCP(t testing.TB, o *taptest.Backend, i int) header.TCP {
	t.Helper()
	p, err := packet.Parse(o.QueuedFrame(i))
	if err != nil || p.Proto != header.ProtoTCP {
		t.Fatalf("frame %d is not TCP: %v", i, err)
	}
	return header.TCP(p.L4Bytes())
}

// unitWorld is a handler with a fake guest (taptest's back end: the test
// inspects the frames queued towards the guest and drops them with Flush)
// and real host sockets on loopback, the loop turned by the test itself.
type unitWorld struct {
	cfg config.Config
	g   guest.State
	l   *loop.Loop
	ft  *flow.Table
	out *taptest.Backend
	h   *Handler
}

// newUnitWorld returns a unit world whose back end takes no offloads and
// allocates nothing.
func newUnitWorld(t testing.TB) *unitWorld { return newUnitWorldOut(t, taptest.NewCounter(64)) }

// newUnitWorldOut is newUnitWorld with frames to the guest going to out.
func newUnitWorldOut(t testing.TB, out *taptest.Backend) *unitWorld {
	return newUnitWorldCap(t, out, 64)
}

// newUnitWorldCap is newUnitWorldOut with a flow table of flows slots.
func newUnitWorldCap(t testing.TB, out *taptest.Backend, flows int) *unitWorld {
	u := &unitWorld{out: out}
	// NoSplice: these worlds test the tap path with connections from
	// the host's loopback, which pasta would otherwise splice.
	u.cfg = config.Config{Mode: config.ModePasta, MTU: 65520, OurMAC: config.DefaultMAC, NoSplice: true}
	u.cfg.V4 = config.IP{Enabled: true, Addr: guest4, PrefixLen: 24, Gateway: gw4, MapHostLoopback: gw4}
	u.cfg.V6 = config.IP{Enabled: true, Addr: guest6, PrefixLen: 64, Gateway: gw6, MapHostLoopback: gw6}
	u.g.MAC = [6]byte{2, 0, 0, 0, 0, 1}
	u.ft = flow.New(flows)
	var err error
	if u.l, err = loop.New(64); err != nil {
		t.Fatal(err)
	}
	if u.h, err = New(&u.cfg, &u.g, out, u.l, u.ft); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.h.Close)
	return u
}

// guestFrame builds a guest IPv4 TCP frame into f (options opts, payload
// of plen bytes) and returns its parsed packet.
func guestFrame(f []byte, sport, dport uint16, seq, ack uint32, flags uint8, wnd uint16, opts []byte, plen int) packet.Packet {
	tcpLen := 20 + len(opts) + plen
	copy(f[0:6], config.DefaultMAC[:])
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], header.EtherTypeIPv4)
	header.EncodeIPv4(f[14:], header.IPv4Fields{TTL: 64, Proto: header.ProtoTCP, Src: guest4.As4(), Dst: gw4.As4(), PayloadLen: tcpLen})
	tcp := f[34 : 34+tcpLen]
	header.EncodeTCP(tcp, header.TCPFields{SrcPort: sport, DstPort: dport, Seq: seq, Ack: ack, Flags: flags, Window: wnd, OptLen: len(opts)})
	copy(tcp[20:], opts)
	binary.BigEndian.PutUint16(tcp[16:], checksum.Checksum(tcp, checksum.PseudoHeaderIPv4(guest4.As4(), gw4.As4(), 6, uint16(tcpLen))))
	p, _ := packet.Parse(f[:34+tcpLen])
	return p
}

// hostListen opens a blocking listener on 127.0.0.1 with raw calls (no
// allocation when used later).
func hostListen(t testing.TB) (int, uint16) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	unix.Listen(fd, 16)
	sa, _ := unix.Getsockname(fd)
	return fd, uint16(sa.(*unix.SockaddrInet4).Port)
}

// handshake opens a connection from the fake guest to a host listener
// and returns the accepted host socket, the guest's next sequence number
// and ours.
func (u *unitWorld) handshake(t testing.TB, lfd int, port uint16) (hfd int, gseq, hseq uint32) {
	return u.handshakeMSS(t, lfd, port, 65480)
}

// handshakeMSS is handshake with the guest announcing MSS mss.
func (u *unitWorld) handshakeMSS(t testing.TB, lfd int, port uint16, mss uint16) (hfd int, gseq, hseq uint32) {
	return u.handshakeFrom(t, lfd, port, 40000, mss)
}

// handshakeFrom is handshakeMSS from the guest's port sport.
func (u *unitWorld) handshakeFrom(t testing.TB, lfd int, port, sport uint16, mss uint16) (hfd int, gseq, hseq uint32) {
	f := make([]byte, 200)
	opts := []byte{2, 4, byte(mss >> 8), byte(mss), 1, 3, 3, 7} // MSS, NOP, WS 7
	p := guestFrame(f, sport, port, 1000, 0, flagSYN, 65535, opts, 0)
	u.h.FromGuest([]packet.Packet{p})
	for i := 0; i < 50 && u.out.Queued() == 0; i++ {
		u.l.Turn(10 * time.Millisecond)
	}
	if u.out.Queued() != 1 {
		t.Fatalf("%d frames after SYN, want a SYN+ACK", u.out.Queued())
	}
	sa := queuedTCP(t, u.out, 0)
	if sa.Flags() != flagSYN|flagACK || sa.Ack() != 1001 {
		t.Fatalf("answer to SYN: flags %#x ack %d", sa.Flags(), sa.Ack())
	}
	o, err := header.ParseTCPOptions(sa.Options())
	if err != nil || o.MSS != 61440 || o.WS != ourWS {
		t.Fatalf("SYN+ACK options %+v, %v", o, err)
	}
	u.out.Flush()
	hseq = sa.Seq() + 1
	p = guestFrame(f, sport, port, 1001, hseq, flagACK, 65535, nil, 0)
	u.h.FromGuest([]packet.Packet{p})
	hfd, _, err = unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(hfd) })
	return hfd, 1001, hseq
}

// TestRefusedUnit: a SYN to a closed port is answered with RST+ACK.
func TestRefusedUnit(t *testing.T) {
	u := newUnitWorld(t)
	port := hostPort(t)
	f := make([]byte, 200)
	u.h.FromGuest([]packet.Packet{guestFrame(f, 40001, port, 5, 0, flagSYN, 65535, nil, 0)})
	for i := 0; i < 50 && u.out.Queued() == 0; i++ {
		u.l.Turn(10 * time.Millisecond)
	}
	if u.out.Queued() != 1 {
		t.Fatalf("%d frames, want one RST", u.out.Queued())
	}
	r := queuedTCP(t, u.out, 0)
	if r.Flags() != flagRST|flagACK || r.Ack() != 6 {
		t.Fatalf("flags %#x ack %d, want RST+ACK 6", r.Flags(), r.Ack())
	}
	// A stray segment of no connection gets a reset too.
	u.out.Flush()
	u.h.FromGuest([]packet.Packet{guestFrame(f, 40002, port, 5, 77, flagACK, 65535, nil, 0)})
	if u.out.Queued() != 1 || queuedTCP(t, u.out, 0).Flags() != flagRST || queuedTCP(t, u.out, 0).Seq() != 77 {
		t.Fatalf("stray ACK not answered with RST at its ACK")
	}
}

// TestSteadyStateAllocs: data from the guest (written to the host
// socket, ACKed), data from the host (peeked into a frame), and the
// guest's ACK (discarded from the socket) allocate nothing.
func TestSteadyStateAllocs(t *testing.T) {
	u := newUnitWorld(t)
	lfd, port := hostListen(t)
	hfd, gseq, hseq := u.handshake(t, lfd, port)
	const plen = 1000
	data := make([]byte, 200+plen)
	ackf := make([]byte, 200)
	dp := []packet.Packet{guestFrame(data, 40000, port, gseq, hseq, flagACK, 65535, nil, plen)}
	ap := []packet.Packet{guestFrame(ackf, 40000, port, gseq, hseq, flagACK, 65535, nil, 0)}
	rbuf := make([]byte, 4*plen)
	wbuf := make([]byte, plen)
	var bad string
	step := func() {
		// Guest to host.
		tcp := header.TCP(dp[0].L4Bytes())
		tcp.SetSeq(gseq)
		tcp.SetAck(hseq)
		u.h.FromGuest(dp)
		gseq += plen
		if n, _ := unix.Read(hfd, rbuf); n != plen {
			bad = "host read"
		}
		if u.out.Queued() != 1 || queuedTCP(t, u.out, 0).Ack() != gseq {
			bad = "guest data not acknowledged"
		}
		u.out.Flush()
		// Host to guest, and the guest's ACK.
		unix.Write(hfd, wbuf)
		for i := 0; i < 10 && u.out.Queued() == 0; i++ {
			u.l.Turn(10 * time.Millisecond)
		}
		if u.out.Queued() != 1 || queuedTCP(t, u.out, 0).PayloadLen() != plen || queuedTCP(t, u.out, 0).Seq() != hseq {
			bad = "host data not sent"
		}
		hseq += plen
		u.out.Flush()
		tcp = header.TCP(ap[0].L4Bytes())
		tcp.SetSeq(gseq)
		tcp.SetAck(hseq)
		u.h.FromGuest(ap)
		u.out.Flush()
	}
	step()
	allocs := testing.AllocsPerRun(500, step)
	if bad != "" {
		t.Fatal(bad)
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per round trip, want 0", allocs)
	}
	i, _ := u.ft.Lookup(&flow.Key{Proto: 6, Src: guest4.As16(), Dst: gw4.As16(), SrcPort: 40000, DstPort: port})
	if c := &u.h.conns[i]; c.seqAckFromTap != hseq || c.seqFromTap != gseq {
		t.Fatalf("state: ack from guest %d (want %d), from guest %d (want %d)", c.seqAckFromTap, hseq, c.seqFromTap, gseq)
	}
}

// TestResumeAfterBackpressure: host data for the guest waits in the host
// socket while the back end has no buffers for it (a full stream socket),
// nothing is lost or counted as sent, and Resume sends it once the back
// end takes frames again.
func TestResumeAfterBackpressure(t *testing.T) {
	u := newUnitWorld(t)
	lfd, port := hostListen(t)
	hfd, _, hseq := u.handshake(t, lfd, port)
	u.out.SetRoom(0)
	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(i * 13)
	}
	if n, err := unix.Write(hfd, data); n != len(data) {
		t.Fatalf("host write: %d, %v", n, err)
	}
	for i := 0; i < 20; i++ {
		u.l.Turn(5 * time.Millisecond)
	}
	if q := u.out.Queued(); q != 0 {
		t.Fatalf("%d frames queued with no room", q)
	}
	u.out.Writable()
	u.h.Resume()
	got := 0
	for k := 0; k < u.out.Queued(); k++ {
		tcp := queuedTCP(t, u.out, k)
		if tcp.Seq() != hseq+uint32(got) {
			t.Fatalf("frame %d at seq %d, want %d", k, tcp.Seq(), hseq+uint32(got))
		}
		if !bytes.Equal(tcp.Payload(), data[got:got+len(tcp.Payload())]) {
			t.Fatalf("frame %d: payload differs", k)
		}
		got += len(tcp.Payload())
	}
	if got != len(data) {
		t.Fatalf("%d of %d bytes sent after Resume", got, len(data))
	}
}
