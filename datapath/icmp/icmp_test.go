// Echo tests in private network namespaces: through raw sockets (root),
// through ping sockets (the namespace's ping_group_range widened), and the
// refusal warning (default range).
package icmp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/datapath/config/configtest"
	"gopasst/datapath/flow"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/loop"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap/taptest"
	"gopasst/test/nstest"
)

func init() {
	// See enterNetns: keep the main goroutine on the main thread.
	runtime.LockOSThread()
}

// enterNetns moves the calling test goroutine, locked to its thread for
// good, into a new network namespace with lo up, and sets the namespace's
// ping_group_range if pingRange is not empty. The namespace goes away with
// the thread when the test ends. Skips without CAP_SYS_ADMIN.
func enterNetns(t *testing.T, pingRange string) {
	t.Helper()
	nstest.EnterPrivate(t, pingRange)
}

type rig struct {
	cfg *config.Config
	out *taptest.Backend
	l   *loop.Loop
	ft  *flow.Table
	h   *Handler
	pre *Sockets
}

// newRig builds a handler; raw: open raw sockets with Prepare (skipping
// without CAP_NET_RAW) rather than use ping sockets.
func newRig(t *testing.T, raw bool) *rig {
	t.Helper()
	r := &rig{cfg: configtest.DualStack(), out: taptest.New(1), pre: NoSockets()}
	var err error
	if raw {
		if r.pre, err = Prepare(r.cfg); err != nil {
			t.Fatal(err)
		}
		if r.pre.V4 < 0 || r.pre.V6 < 0 {
			t.Skip("no CAP_NET_RAW: raw ICMP sockets cannot be opened")
		}
		t.Cleanup(r.pre.Close)
	}
	if r.l, err = loop.New(64); err != nil {
		t.Fatal(err)
	}
	r.ft = flow.New(64)
	if r.h, err = New(r.cfg, &guest.State{MAC: configtest.GuestMAC}, r.out, r.l, r.ft, r.pre); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.h.Close)
	return r
}

// echo builds an echo request or reply message (checksum left to
// taptest.IP).
func echo(typ uint8, id, seq uint16, data []byte) []byte {
	m := make([]byte, 8+len(data))
	m[0] = typ
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], data)
	return m
}

// echoRequest builds a guest echo request frame.
func echoRequest(src, dst netip.Addr, id, seq uint16, data []byte) packet.Packet {
	proto, typ := header.ProtoICMP, header.ICMPv4EchoRequest
	if src.Is6() {
		proto, typ = header.ProtoICMPv6, header.ICMPv6EchoRequest
	}
	return taptest.IP{MACDst: config.DefaultMAC, MACSrc: configtest.GuestMAC, Src: src, Dst: dst,
		Proto: proto, TTL: 64}.Packet(echo(typ, id, seq, data))
}

// wantReply builds the echo reply frame the guest must get.
func wantReply(from, to netip.Addr, id, seq uint16, data []byte) []byte {
	proto, typ := header.ProtoICMP, header.ICMPv4EchoReply
	if from.Is6() {
		proto, typ = header.ProtoICMPv6, header.ICMPv6EchoReply
	}
	return taptest.IP{MACDst: configtest.GuestMAC, MACSrc: config.DefaultMAC, Src: from, Dst: to,
		Proto: proto, TTL: 255, DF: true}.Frame(echo(typ, id, seq, data))
}

func (r *rig) waitFrames(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for r.out.Count() < n && time.Now().Before(deadline) {
		if err := r.l.Turn(50 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if r.out.Count() < n {
		t.Fatalf("%d frames towards the guest, want %d (stats %+v)", r.out.Count(), n, r.h.Stats)
	}
}

// settle turns the loop for a while, for tests that expect nothing more.
func (r *rig) settle() {
	for i := 0; i < 4; i++ {
		r.l.Turn(25 * time.Millisecond)
	}
}

var families = []struct {
	name      string
	guest, gw netip.Addr
}{{"IPv4", configtest.Guest4, configtest.Gateway4}, {"IPv6", configtest.Guest6, configtest.Gateway6}}

// testEcho pings the gateway (the host's loopback) twice, then repeats the
// second sequence number: the replies carry the guest's id and sequence
// from the gateway address, and the repeated one is dropped.
func testEcho(t *testing.T, raw bool) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			pingRange := ""
			if !raw {
				pingRange = "0 2147483647"
			}
			enterNetns(t, pingRange)
			r := newRig(t, raw)
			data := []byte("abcdefghijklmnopqrstuvwxyz0123456789!")
			for seq := uint16(1); seq <= 2; seq++ {
				r.h.FromGuest([]packet.Packet{echoRequest(fam.guest, fam.gw, 0x4242, seq, data)})
				r.waitFrames(t, int(seq))
				want := wantReply(fam.gw, fam.guest, 0x4242, seq, data)
				if got := r.out.Frames()[seq-1]; !bytes.Equal(got, want) {
					t.Fatalf("reply %d:\n got %x\nwant %x", seq, got, want)
				}
			}
			r.h.FromGuest([]packet.Packet{echoRequest(fam.guest, fam.gw, 0x4242, 2, data)})
			r.settle()
			if r.out.Count() != 2 || r.h.Stats.Duplicates != 1 {
				t.Fatalf("%d frames, stats %+v: the duplicate was not dropped", r.out.Count(), r.h.Stats)
			}
			if r.h.Flows() != 1 {
				t.Fatalf("%d flows", r.h.Flows())
			}
			// A second guest identifier is a second flow.
			r.h.FromGuest([]packet.Packet{echoRequest(fam.guest, fam.gw, 7, 1, nil)})
			r.waitFrames(t, 3)
			if want := wantReply(fam.gw, fam.guest, 7, 1, nil); !bytes.Equal(r.out.Frames()[2], want) {
				t.Fatalf("reply:\n got %x\nwant %x", r.out.Frames()[2], want)
			}
			// Timeout after the last request.
			now := r.l.Now()
			r.h.tick(now + int64(Timeout) - int64(time.Second))
			if r.h.Flows() != 2 {
				t.Fatal("flow closed early")
			}
			r.h.tick(now + int64(Timeout))
			if r.h.Flows() != 0 || r.ft.Count() != 0 {
				t.Fatalf("%d flows after the timeout", r.h.Flows())
			}
		})
	}
}

// TestRawEcho: echo through the raw sockets Prepare opens (root).
func TestRawEcho(t *testing.T) { testEcho(t, true) }

// TestPingSocketEcho: echo through ping sockets, in a namespace whose
// ping_group_range includes our group.
func TestPingSocketEcho(t *testing.T) { testEcho(t, false) }

// TestPingRefused: with the default ping_group_range ("1 0") and no raw
// sockets, requests are dropped (with one warning) and no flow is left.
func TestPingRefused(t *testing.T) {
	enterNetns(t, "1 0")
	r := newRig(t, false)
	for i := 0; i < 3; i++ {
		r.h.FromGuest([]packet.Packet{echoRequest(configtest.Guest4, configtest.Gateway4, 1, uint16(i), nil)})
	}
	r.settle()
	if r.out.Count() != 0 || r.h.Stats.Dropped != 3 || r.h.Flows() != 0 || r.ft.Count() != 0 || !r.h.warned {
		t.Fatalf("frames %d, flows %d, stats %+v, warned %v", r.out.Count(), r.h.Flows(), r.h.Stats, r.h.warned)
	}
}

// TestRawStray: echo replies on the raw socket that belong to no flow
// (another program's ping) do not reach the guest.
func TestRawStray(t *testing.T) {
	enterNetns(t, "0 2147483647")
	r := newRig(t, true)
	// Someone else pings 127.0.0.1 with a ping socket.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	req := []byte{8, 0, 0, 0, 0, 0, 0, 1, 'x'}
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for r.h.Stats.Stray == 0 && time.Now().Before(deadline) {
		r.l.Turn(50 * time.Millisecond)
	}
	if r.h.Stats.Stray == 0 || r.out.Count() != 0 {
		t.Fatalf("stats %+v, %d frames", r.h.Stats, r.out.Count())
	}
}

// TestAllocs: an echo request and its reply through a raw socket, loop
// turn included, allocate nothing once the flow exists.
func TestAllocs(t *testing.T) {
	enterNetns(t, "")
	r := newRig(t, true)
	r.out.Keep = false
	seq := uint16(1)
	pkts := []packet.Packet{echoRequest(configtest.Guest4, configtest.Gateway4, 9, seq, make([]byte, 56))}
	r.h.FromGuest(pkts)
	r.waitFrames(t, 1)
	allocs := testing.AllocsPerRun(50, func() {
		seq++
		// A new sequence number each time, checksum kept right.
		pkts = pkts[:1]
		m := pkts[0].L4Bytes()
		binary.BigEndian.PutUint16(m[4:], 9)
		binary.BigEndian.PutUint16(m[6:], seq)
		header.ICMPv4(m).SetChecksum()
		r.h.FromGuest(pkts)
		r.l.Turn(time.Second)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per echo", allocs)
	}
	if r.out.Count() != 52 {
		t.Fatalf("%d replies, want 52", r.out.Count())
	}
}

// TestCarried: raw sockets opened as files (the isolation.Carry path) and
// rebuilt with SocketsFromFiles work like Prepare's.
func TestCarried(t *testing.T) {
	enterNetns(t, "")
	cfg := configtest.DualStack()
	f4, err := OpenRaw(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	f6, err := OpenRaw(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	if f4 == nil || f6 == nil {
		t.Skip("no CAP_NET_RAW: raw ICMP sockets cannot be opened")
	}
	pre, err := SocketsFromFiles(f4, f6)
	if err != nil {
		t.Fatal(err)
	}
	defer pre.Close()
	out := taptest.New(1)
	l, err := loop.New(64)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(cfg, &guest.State{MAC: configtest.GuestMAC}, out, l, flow.New(64), pre)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r := &rig{cfg: cfg, out: out, l: l, h: h}
	for i, fam := range families {
		h.FromGuest([]packet.Packet{echoRequest(fam.guest, fam.gw, 3, 1, []byte("carried"))})
		r.waitFrames(t, i+1)
		if want := wantReply(fam.gw, fam.guest, 3, 1, []byte("carried")); !bytes.Equal(out.Frames()[i], want) {
			t.Fatalf("%s reply:\n got %x\nwant %x", fam.name, out.Frames()[i], want)
		}
	}
	cfg.NoICMP = true
	if f, err := OpenRaw(cfg, false); f != nil || err != nil {
		t.Fatalf("--no-icmp: %v %v", f, err)
	}
}
