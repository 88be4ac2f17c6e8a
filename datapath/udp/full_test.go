// A full flow table: a guest datagram that cannot get a flow comes back as
// an ICMP/ICMPv6 port unreachable, a host datagram on a forwarded port is
// dropped, one warning per episode, and both directions work again once a
// flow times out and frees its slot.

package udp

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/fwd"
	"gopasst/datapath/packet"
)

// quiet reports whether nothing arrives on s within 100 ms.
func (s *server) quiet() bool {
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
	n, _ := unix.Poll(fds, 100)
	return n == 0
}

// TestTableFull: with both slots of a 2-flow table taken by two guest
// flows to a host server, a datagram of a third flow is not sent, and the
// guest gets a port unreachable quoting it, checked byte for byte (and a
// second one for a fourth flow; one warning for both). Once the two flows
// time out, the refused 4-tuple gets a flow: its datagram reaches the
// server, and the server's answer reaches the guest, both checked.
func TestTableFull(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			enterNetns(t)
			r := newRigFlows(t, 64, true, 2)
			srv := listenUDP(t, fam.loopback, 0)
			for _, sport := range []uint16{41000, 41001} {
				r.h.FromGuest([]packet.Packet{guestUDP(fam.guest, sport, fam.gw, srv.port, 64, []byte("fill"))})
				if got, from := srv.recv(t); string(got) != "fill" || from.Port() != sport {
					t.Fatalf("server got %q from %v", got, from)
				}
			}
			payload := []byte("0123456789abcdef, refused")
			r.h.FromGuest([]packet.Packet{guestUDP(fam.guest, 40002, fam.gw, srv.port, 61, payload)})
			if r.out.Count() != 1 {
				t.Fatalf("%d frames to the guest for a datagram refused, want an ICMP error", r.out.Count())
			}
			f := r.out.Frames()[0]
			if fam.guest.Is4() {
				checkICMPv4Unreach(t, f, fam, srv.port, payload)
			} else {
				checkICMPv6Unreach(t, f, fam, srv.port, payload)
			}
			r.h.FromGuest([]packet.Packet{guestUDP(fam.guest, 40003, fam.gw, srv.port, 61, payload)})
			if !srv.quiet() {
				t.Fatal("a refused datagram reached the server")
			}
			if r.out.Count() != 2 || r.h.Stats.TableFull != 2 || r.h.full.Total != 2 || !r.h.full.Full() || r.h.Flows() != 2 {
				t.Fatalf("%d frames, stats %+v, refusals %+v, %d flows", r.out.Count(), r.h.Stats, r.h.full, r.h.Flows())
			}

			// The two flows time out; the refused one gets through.
			single, _ := r.h.Timeouts()
			r.h.tick(r.l.Refresh() + int64(single))
			if r.h.Flows() != 0 || r.ft.Count() != 0 {
				t.Fatalf("%d flows after their timeout", r.h.Flows())
			}
			r.h.FromGuest([]packet.Packet{guestUDP(fam.guest, 40002, fam.gw, srv.port, 61, payload)})
			got, from := srv.recv(t)
			if !bytes.Equal(got, payload) || from != netip.AddrPortFrom(fam.loopback, 40002) {
				t.Fatalf("server got %q from %v after the table freed up", got, from)
			}
			reply := []byte("answered once a slot was free")
			srv.sendTo(t, from, reply)
			r.waitFrames(t, 3)
			want := wantUDPFrame(fam.gw, srv.port, fam.guest, 40002, reply)
			if !bytes.Equal(r.out.Frames()[2], want) {
				t.Fatalf("frame to guest:\n got %x\nwant %x", r.out.Frames()[2], want)
			}
			if r.h.full.Full() || r.h.Flows() != 1 {
				t.Fatalf("refusals %+v, %d flows", r.h.full, r.h.Flows())
			}
		})
	}
}

// TestTableFullInbound: with the only slot taken, a host datagram to a
// forwarded port is dropped (no frame, counted); once the flow holding
// the slot times out, the peer's next datagram reaches the guest.
func TestTableFullInbound(t *testing.T) {
	enterNetns(t)
	r := newRigFlows(t, 64, true, 1)
	srv := listenUDP(t, lo4, 0)
	r.h.FromGuest([]packet.Packet{guestUDP(families[0].guest, 41000, families[0].gw, srv.port, 64, []byte("fill"))})
	srv.recv(t)
	port := freePort(t, lo6)
	spec := &fwd.Spec{Proto: fwd.UDP, Rules: []fwd.Rule{{Proto: fwd.UDP, First: port, Last: port, To: 5353}}}
	if err := r.h.Listen(spec, false); err != nil {
		t.Fatal(err)
	}
	client := listenUDP(t, lo4, 0)
	client.sendTo(t, netip.AddrPortFrom(lo4, port), []byte("dropped"))
	for i := 0; i < 20 && r.h.Stats.TableFull == 0; i++ {
		r.l.Turn(10 * time.Millisecond)
	}
	if r.out.Count() != 0 || r.h.Stats.TableFull != 1 || !r.h.full.Full() {
		t.Fatalf("%d frames, stats %+v", r.out.Count(), r.h.Stats)
	}
	single, _ := r.h.Timeouts()
	r.h.tick(r.l.Refresh() + int64(single))
	client.sendTo(t, netip.AddrPortFrom(lo4, port), []byte("delivered"))
	r.waitFrames(t, 1)
	want := wantUDPFrame(families[0].gw, client.port, families[0].guest, 5353, []byte("delivered"))
	if !bytes.Equal(r.out.Frames()[0], want) {
		t.Fatalf("frame to guest:\n got %x\nwant %x", r.out.Frames()[0], want)
	}
	if r.h.full.Full() {
		t.Fatal("refusals still under way after a flow was admitted")
	}
}

// atDescriptorLimit lowers the process's soft limit of descriptors to the
// lowest free descriptor number, so that no descriptor can be had until
// one is closed, and returns the function that restores it (also run at
// t's cleanup).
func atDescriptorLimit(t *testing.T) (restore func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	free, err := unix.Dup(0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(free)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: uint64(free), Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	done := false
	restore = func() {
		if !done {
			unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
			done = true
		}
	}
	t.Cleanup(restore)
	if fd, err := unix.Dup(0); err != unix.EMFILE {
		unix.Close(fd)
		restore()
		t.Fatalf("dup at the lowered limit: %v, want EMFILE", err)
	}
	return restore
}

// TestNoDescriptor: a guest datagram whose flow cannot get a socket (the
// process is at its descriptor limit) comes back as a port unreachable,
// checked byte for byte, like one refused for want of a slot; once
// descriptors are free, the same 4-tuple gets its flow and its datagram
// reaches the server.
func TestNoDescriptor(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			enterNetns(t)
			r := newRig(t, 64, true)
			srv := listenUDP(t, fam.loopback, 0)
			payload := []byte("0123456789abcdef, no descriptor")
			restore := atDescriptorLimit(t)
			r.h.FromGuest([]packet.Packet{guestUDP(fam.guest, 40002, fam.gw, srv.port, 61, payload)})
			restore()
			if r.out.Count() != 1 || r.h.Stats.NoFDs != 1 || r.h.Flows() != 0 || r.ft.Count() != 0 {
				t.Fatalf("%d frames, stats %+v, %d flows", r.out.Count(), r.h.Stats, r.h.Flows())
			}
			if fam.guest.Is4() {
				checkICMPv4Unreach(t, r.out.Frames()[0], fam, srv.port, payload)
			} else {
				checkICMPv6Unreach(t, r.out.Frames()[0], fam, srv.port, payload)
			}
			r.h.FromGuest([]packet.Packet{guestUDP(fam.guest, 40002, fam.gw, srv.port, 61, payload)})
			if got, _ := srv.recv(t); !bytes.Equal(got, payload) || r.h.nofd.Full() {
				t.Fatalf("server got %q once descriptors were free (refusals %+v)", got, r.h.nofd)
			}
		})
	}
}
