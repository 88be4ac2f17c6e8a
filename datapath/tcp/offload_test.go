// Unit tests of the offload paths with a fake guest: GSO frames towards the
// guest (virtio-net header, partial checksum that completes to a valid one,
// segments of the guest's MSS), super-frames with partial checksums from
// the guest, and the allocation-free steady state with offloads.

package tcp

import (
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/checksum"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap"
	"gopasst/datapath/tap/taptest"
)

// newOffloadWorld is newUnitWorld with a back end that takes offloads
// (TCP segmentation if gso) and records the virtio-net header of every
// frame (QueuedHdr). Returns the world and its back end.
func newOffloadWorld(t testing.TB, gso bool) (*unitWorld, *taptest.Backend) {
	o := taptest.NewCounter(64)
	o.SetOffloads(tap.Offloads{Csum: true, TSO: gso})
	return newUnitWorldOut(t, o), o
}

// completeChecksum does what the guest's kernel does with a partial
// checksum it has to finish: sum from csum_start to the end, the field
// included (it holds the pseudo-header sum), and store the complement.
func completeChecksum(f []byte, h *tap.VnetHdr) {
	at := int(h.CsumStart) + int(h.CsumOffset)
	c := checksum.Checksum(f[h.CsumStart:], 0)
	binary.BigEndian.PutUint16(f[at:], c)
}

// TestOffloadGSOToGuest: with a guest MSS of 1460, host data goes out in
// super-frames of whole segments (GSO TCPv4, gso_size 1460, at most 64 KiB
// of IP packet) whose partial checksum completes to a valid one; control
// frames carry a partial checksum without GSO. With checksum offload only,
// frames stay within the MSS.
func TestOffloadGSOToGuest(t *testing.T) {
	for _, gso := range []bool{true, false} {
		u, fo := newOffloadWorld(t, gso)
		lfd, port := hostListen(t)
		hfd, _, hseq := u.handshakeMSS(t, lfd, port, 1460)
		const size = 80000 // without GSO 55 frames: within the fake's 64
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i * 7)
		}
		if n, err := unix.Write(hfd, data); n != size {
			t.Fatalf("host write: %d, %v", n, err)
		}
		for i := 0; i < 50 && u.out.Queued() == 0; i++ {
			u.l.Turn(10 * time.Millisecond)
		}
		if u.out.Queued() == 0 {
			t.Fatal("no frames to the guest")
		}
		got := 0
		seq := hseq
		for i := 0; i < u.out.Queued(); i++ {
			f := u.out.QueuedFrame(i)
			h := fo.QueuedHdr(i)
			tcp := queuedTCP(t, u.out, i)
			pl := tcp.PayloadLen()
			if h.Flags != tap.VnetNeedsCsum || h.CsumStart != 34 || h.CsumOffset != 16 || h.HdrLen != 54 {
				t.Fatalf("frame %d: virtio-net header %+v", i, h)
			}
			switch {
			case !gso && pl > 1460:
				t.Fatalf("frame %d: %d bytes of payload without GSO, MSS 1460", i, pl)
			case pl > 1460 && (h.GSOType != tap.GSOTCPv4 || h.GSOSize != 1460):
				t.Fatalf("frame %d: %d bytes of payload, header %+v", i, pl, h)
			case pl <= 1460 && h.GSOType != tap.GSONone:
				t.Fatalf("frame %d: one segment marked GSO %+v", i, h)
			case len(f)-14 > 65535:
				t.Fatalf("frame %d: IP packet of %d bytes", i, len(f)-14)
			case i < u.out.Queued()-1 && pl%1460 != 0:
				t.Fatalf("frame %d: %d bytes, not whole segments", i, pl)
			}
			if tcp.Seq() != seq {
				t.Fatalf("frame %d: seq %d, want %d", i, tcp.Seq(), seq)
			}
			for k, b := range tcp.Payload() {
				if b != data[got+k] {
					t.Fatalf("frame %d: payload byte %d differs", i, k)
				}
			}
			completeChecksum(f, &h)
			pseudo := checksum.PseudoHeaderIPv4(gw4.As4(), guest4.As4(), header.ProtoTCP, uint16(len(tcp)))
			if checksum.Sum(tcp, pseudo) != 0xffff {
				t.Fatalf("frame %d: completed checksum invalid", i)
			}
			got += pl
			seq += uint32(pl)
		}
		if gso && u.out.Queued() > 4 {
			t.Errorf("GSO: %d frames for %d bytes", u.out.Queued(), got)
		}
		t.Logf("gso %v: %d bytes in %d frames", gso, got, u.out.Queued())
	}
}

// TestOffloadFromGuest: a guest super-frame (many segments' worth of
// payload, its checksum only the pseudo-header sum) is written whole to
// the host socket and acknowledged.
func TestOffloadFromGuest(t *testing.T) {
	u, _ := newOffloadWorld(t, true)
	lfd, port := hostListen(t)
	hfd, gseq, hseq := u.handshakeMSS(t, lfd, port, 1460)
	const plen = 60000
	f := make([]byte, 100+plen)
	p := guestFrame(f, 40000, port, gseq, hseq, flagACK|flagPSH, 65535, nil, plen)
	tcp := header.TCP(p.L4Bytes())
	for i := range tcp.Payload() {
		tcp.Payload()[i] = byte(i)
	}
	// What the guest's kernel leaves with TSO: the pseudo-header sum.
	tcp.SetChecksumValue(checksum.PseudoHeaderIPv4(guest4.As4(), gw4.As4(), header.ProtoTCP, uint16(len(tcp))))
	u.h.FromGuest([]packet.Packet{p})
	buf := make([]byte, plen+1)
	n := 0
	for tries := 0; n < plen && tries < 100; tries++ {
		r, _ := unix.Read(hfd, buf[n:])
		if r > 0 {
			n += r
		}
	}
	if n != plen {
		t.Fatalf("host read %d bytes, want %d", n, plen)
	}
	for i := 0; i < plen; i++ {
		if buf[i] != byte(i) {
			t.Fatalf("byte %d differs", i)
		}
	}
	if u.out.Queued() != 1 || queuedTCP(t, u.out, 0).Ack() != gseq+plen {
		t.Fatalf("%d frames, want one ACK of %d", u.out.Queued(), gseq+plen)
	}
}

// TestOffloadSteadyStateAllocs: the steady state with offloads allocates
// nothing either.
func TestOffloadSteadyStateAllocs(t *testing.T) {
	u, _ := newOffloadWorld(t, true)
	lfd, port := hostListen(t)
	hfd, gseq, hseq := u.handshakeMSS(t, lfd, port, 1460)
	const plen = 5000
	data := make([]byte, 200+plen)
	ackf := make([]byte, 200)
	dp := []packet.Packet{guestFrame(data, 40000, port, gseq, hseq, flagACK, 65535, nil, plen)}
	ap := []packet.Packet{guestFrame(ackf, 40000, port, gseq, hseq, flagACK, 65535, nil, 0)}
	rbuf := make([]byte, 4*plen)
	wbuf := make([]byte, plen)
	var bad string
	step := func() {
		tcp := header.TCP(dp[0].L4Bytes())
		tcp.SetSeq(gseq)
		tcp.SetAck(hseq)
		u.h.FromGuest(dp)
		gseq += plen
		if n, _ := unix.Read(hfd, rbuf); n != plen {
			bad = "host read"
		}
		u.out.Flush()
		unix.Write(hfd, wbuf)
		for i := 0; i < 10 && u.out.Queued() == 0; i++ {
			u.l.Turn(10 * time.Millisecond)
		}
		if u.out.Queued() != 1 || queuedTCP(t, u.out, 0).PayloadLen() != plen {
			bad = "host data not sent as one GSO frame"
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
	allocs := testing.AllocsPerRun(300, step)
	if bad != "" {
		t.Fatal(bad)
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per round trip, want 0", allocs)
	}
}
