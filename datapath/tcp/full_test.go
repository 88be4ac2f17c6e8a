// A full flow table: guest SYNs are answered with a reset, connections
// accepted on a forwarded port are reset and the listener keeps draining,
// one warning per episode, and new connections work again once a slot
// frees up (unit world: fake guest, real host sockets).

package tcp

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/checksum"
	"gopasst/datapath/config"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap/taptest"
)

// wantRST builds, independently of the handler, the frame that answers a
// guest SYN from guest4:sport to gw4:dport with sequence number seq: RST+ACK
// at sequence 0 acknowledging the SYN (RFC 9293 §3.10.7.1), window 0, no
// options, full checksum (the unit world's back end takes no offloads).
func wantRST(mac [6]byte, sport, dport uint16, seq uint32) []byte {
	l4 := make([]byte, header.TCPMinLen)
	header.EncodeTCP(l4, header.TCPFields{SrcPort: dport, DstPort: sport, Ack: seq + 1, Flags: flagRST | flagACK})
	src, dst := gw4.As4(), guest4.As4()
	csum := checksum.Checksum(l4, checksum.PseudoHeaderIPv4(src, dst, header.ProtoTCP, uint16(len(l4))))
	l4[16], l4[17] = byte(csum>>8), byte(csum)
	return taptest.IP{MACDst: mac, MACSrc: config.DefaultMAC, Src: gw4, Dst: guest4,
		Proto: header.ProtoTCP, TTL: 255, DF: true}.Frame(l4)
}

// acceptable reports whether listener lfd has a connection waiting.
func acceptable(lfd int) bool {
	fds := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}}
	n, _ := unix.Poll(fds, 0)
	return n > 0
}

// TestTableFullOutbound: with both slots of a 2-flow table taken, two
// further guest SYNs are each answered at once with a reset (checked byte
// for byte), no host connection is attempted, and the episode is warned
// about once. The guest then resets one of its connections; after the turn
// that frees its slot, a SYN from the refused port gets a connection, and
// data crosses it both ways, checked at both ends.
func TestTableFullOutbound(t *testing.T) {
	u := newUnitWorldCap(t, taptest.NewCounter(64), 2)
	lfd, port := hostListen(t)
	_, gseq1, hseq1 := u.handshakeFrom(t, lfd, port, 40000, 65480)
	u.handshakeFrom(t, lfd, port, 40001, 65480)

	f := make([]byte, 200)
	for k, sport := range []uint16{40002, 40003} {
		seq := uint32(7000 + k)
		u.h.FromGuest([]packet.Packet{guestFrame(f, sport, port, seq, 0, flagSYN, 65535, nil, 0)})
		if u.out.Queued() != 1 {
			t.Fatalf("SYN %d on a full table: %d frames queued, want one RST", k, u.out.Queued())
		}
		if got, want := u.out.QueuedFrame(0), wantRST(u.g.MAC, sport, port, seq); !bytes.Equal(got, want) {
			t.Fatalf("answer to SYN %d on a full table:\n got %x\nwant %x", k, got, want)
		}
		u.out.Flush()
	}
	u.l.Turn(10 * time.Millisecond)
	if acceptable(lfd) {
		t.Fatal("a refused SYN reached the host's listener")
	}
	if u.h.Stats.TableFull != 2 || u.h.full.Total != 2 || !u.h.full.Full() || u.h.Conns() != 2 {
		t.Fatalf("stats %+v, refusals %+v, %d connections", u.h.Stats, u.h.full, u.h.Conns())
	}

	// The guest resets its first connection: the slot is freed at the
	// end of the turn.
	u.h.FromGuest([]packet.Packet{guestFrame(f, 40000, port, gseq1, hseq1, flagRST|flagACK, 0, nil, 0)})
	u.l.Turn(0)
	if u.ft.Count() != 1 || u.h.Conns() != 1 {
		t.Fatalf("after the guest's reset: %d flows, %d connections", u.ft.Count(), u.h.Conns())
	}

	// A new connection from the refused port gets through.
	hfd, gseq, hseq := u.handshakeFrom(t, lfd, port, 40002, 65480)
	if u.h.full.Full() || u.ft.Count() != 2 {
		t.Fatalf("after a connection was admitted: refusals %+v, %d flows", u.h.full, u.ft.Count())
	}
	data := make([]byte, 200+1000)
	msg := data[hdrLen4 : hdrLen4+1000]
	for i := range msg {
		msg[i] = byte(i*7 + 3)
	}
	want := bytes.Clone(msg)
	u.h.FromGuest([]packet.Packet{guestFrame(data, 40002, port, gseq, hseq, flagACK|flagPSH, 65535, nil, len(msg))})
	got := make([]byte, 2000)
	unix.SetsockoptTimeval(hfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
	n, err := unix.Read(hfd, got)
	if err != nil || !bytes.Equal(got[:n], want) {
		t.Fatalf("host read %d bytes (%v), want the guest's 1000", n, err)
	}
	if u.out.Queued() != 1 || queuedTCP(t, u.out, 0).Ack() != gseq+1000 {
		t.Fatal("guest data not acknowledged")
	}
	u.out.Flush()
	answer := []byte("an answer from the host, after the table had been full")
	if _, err := unix.Write(hfd, answer); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50 && u.out.Queued() == 0; i++ {
		u.l.Turn(10 * time.Millisecond)
	}
	if u.out.Queued() != 1 {
		t.Fatalf("%d frames after the host's write, want 1", u.out.Queued())
	}
	if seg := queuedTCP(t, u.out, 0); seg.Seq() != hseq || !bytes.Equal(seg.Payload(), answer) {
		t.Fatalf("frame to the guest: seq %d (want %d), payload %q", seg.Seq(), hseq, seg.Payload())
	}
}

// TestTableFullInbound: with the table full, connections to a forwarded
// port are accepted and reset at once (the client's read fails with
// ECONNRESET), twice the listener's backlog of them, so the backlog
// never fills; the guest is sent nothing. Once a slot frees up, the next
// connection reaches the guest as a SYN.
func TestTableFullInbound(t *testing.T) {
	u := newUnitWorldCap(t, taptest.NewCounter(64), 1)
	lfd, port := hostListen(t)
	_, gseq, hseq := u.handshakeFrom(t, lfd, port, 40000, 65480)
	fport := hostPort(t)
	if err := u.h.ListenPort(netip.MustParseAddr("127.0.0.1"), fport); err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), fport).String()
	const total, batch = 2 * listenBacklog, 32
	deadline := time.Now().Add(20 * time.Second)
	for done := 0; done < total; done += batch {
		var cs []net.Conn
		for range batch {
			c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
			if err != nil {
				t.Fatalf("connection %d of %d: %v", done+len(cs), total, err)
			}
			cs = append(cs, c)
		}
		for i := 0; i < 20 && acceptable(u.h.listeners[0].fd); i++ {
			u.l.Turn(5 * time.Millisecond)
		}
		for k, c := range cs {
			c.SetReadDeadline(deadline)
			_, err := c.Read(make([]byte, 1))
			c.Close()
			if !errors.Is(err, unix.ECONNRESET) {
				t.Fatalf("connection %d on a full table: read %v, want ECONNRESET", done+k, err)
			}
		}
	}
	if u.out.Queued() != 0 {
		t.Fatalf("%d frames to the guest for refused connections", u.out.Queued())
	}
	if u.h.Stats.TableFull != total || u.h.Stats.Accepted != 0 || !u.h.full.Full() {
		t.Fatalf("stats %+v, refusals %+v", u.h.Stats, u.h.full)
	}

	// Free the slot (the guest resets its connection), connect again.
	f := make([]byte, 200)
	u.h.FromGuest([]packet.Packet{guestFrame(f, 40000, port, gseq, hseq, flagRST|flagACK, 0, nil, 0)})
	u.l.Turn(0)
	c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 50 && u.out.Queued() == 0; i++ {
		u.l.Turn(10 * time.Millisecond)
	}
	if u.out.Queued() != 1 {
		t.Fatalf("%d frames after a connection with a free slot, want a SYN", u.out.Queued())
	}
	p, err := packet.Parse(u.out.QueuedFrame(0))
	if err != nil || p.Src != gw4 || p.Dst != guest4 || p.DstPort != fport ||
		header.TCP(p.L4Bytes()).Flags() != flagSYN || u.h.Stats.Accepted != 1 || u.h.full.Full() {
		t.Fatalf("frame to the guest %+v (%v), stats %+v", p, err, u.h.Stats)
	}
}

// TestAcceptAtDescriptorLimit: connections waiting on a forwarded port
// while the process has no descriptor left are accepted with the spare
// descriptor and reset (the client's read fails with ECONNRESET), so the
// listener's backlog empties instead of the loop spinning on a listener
// that stays readable; once descriptors are free again, the next
// connection reaches the guest as a SYN.
func TestAcceptAtDescriptorLimit(t *testing.T) {
	u := newUnitWorldCap(t, taptest.NewCounter(64), 64)
	fport := hostPort(t)
	if err := u.h.ListenPort(netip.MustParseAddr("127.0.0.1"), fport); err != nil {
		t.Fatal(err)
	}
	lfd := u.h.listeners[0].fd
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), fport).String()
	var cs []net.Conn
	for range 3 {
		c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs = append(cs, c)
	}

	// The limit at the lowest free descriptor number: no descriptor can
	// be had until one is closed.
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	free, err := unix.Dup(0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(free)
	lim := unix.Rlimit{Cur: uint64(free), Max: old.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
			restored = true
		}
	}
	defer restore()
	if fd, err := unix.Dup(0); err != unix.EMFILE {
		unix.Close(fd)
		restore()
		t.Fatalf("dup at the lowered limit: %v, want EMFILE", err)
	}
	for i := 0; i < 10 && acceptable(lfd); i++ {
		u.l.Turn(5 * time.Millisecond)
	}
	pending := acceptable(lfd)
	restore()
	if pending {
		t.Fatalf("connections still wait on the listener at the descriptor limit (stats %+v)", u.h.Stats)
	}
	for k, c := range cs {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, unix.ECONNRESET) {
			t.Fatalf("connection %d at the descriptor limit: read %v, want ECONNRESET", k, err)
		}
	}
	if u.h.Stats.NoFDs != 3 || u.h.Stats.Accepted != 0 || u.out.Queued() != 0 || u.h.spare < 0 {
		t.Fatalf("stats %+v, %d frames, spare %d", u.h.Stats, u.out.Queued(), u.h.spare)
	}

	c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 50 && u.out.Queued() == 0; i++ {
		u.l.Turn(10 * time.Millisecond)
	}
	if u.out.Queued() != 1 || queuedTCP(t, u.out, 0).Flags() != flagSYN {
		t.Fatalf("%d frames after a connection with descriptors free, want a SYN", u.out.Queued())
	}
}
