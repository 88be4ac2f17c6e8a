// Host to guest with offloads: partial checksums, the staged path's GSO
// frames (layout and virtio-net headers against a recording back end, and
// delivery through a real tap device into the namespace's socket), and
// zero allocations.
package udp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/checksum"
	"gopasst/datapath/config/configtest"
	"gopasst/datapath/flow"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/loop"
	"gopasst/datapath/packet"
	"gopasst/datapath/tap"
	"gopasst/datapath/tap/taptest"
)

// newOffRig is newRig with an offloading back end.
//
// The back end (taptest's) keeps the virtio-net header of every committed
// frame (an empty one for Commit) when it keeps frames: Hdrs.
func newOffRig(t *testing.T, slots int, keep, gso bool) (*rig, *taptest.Backend) {
	t.Helper()
	o := taptest.New(slots)
	o.Keep = keep
	o.SetOffloads(tap.Offloads{Csum: true, TSO: gso, USO: gso})
	r := &rig{cfg: testConfig(), g: &guest.State{MAC: configtest.GuestMAC}, out: o}
	var err error
	if r.l, err = loop.New(1024); err != nil {
		t.Fatal(err)
	}
	r.ft = flow.New(1024)
	if r.h, err = New(r.cfg, r.g, o, r.l, r.ft); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.h.Close)
	return r, o
}

// peerFlow creates a flow from the guest to a server on fam's loopback and
// connects the server back to the flow's socket. Returns the server.
func peerFlow(t *testing.T, r *rig, fam family, sport uint16) *server {
	t.Helper()
	srv := listenUDP(t, fam.loopback, 0)
	r.h.FromGuest([]packet.Packet{guestUDP(fam.guest, sport, fam.gw, srv.port, 64, []byte("hi"))})
	_, from := srv.recv(t)
	if err := unix.Connect(srv.fd, sockaddrOf(from)); err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptInt(srv.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
	return srv
}

// segments checks a frame to the guest from fam's gateway:sport to its
// guest:dport with virtio-net header vh (partial checksum, GSO_UDP_L4 or
// none) and returns the datagrams it carries.
func segments(t *testing.T, fam family, sport, dport uint16, f []byte, vh tap.VnetHdr) [][]byte {
	t.Helper()
	v6 := fam.guest.Is6()
	hl := hdrLen(v6)
	if vh.Flags != tap.VnetNeedsCsum || int(vh.CsumStart) != hl-header.UDPLen || vh.CsumOffset != 6 || int(vh.HdrLen) != hl {
		t.Fatalf("virtio-net header %+v", vh)
	}
	u := header.UDP(f[hl-header.UDPLen:])
	if u.SrcPort() != sport || u.DstPort() != dport || int(be16(u[4:])) != len(u) {
		t.Fatalf("UDP header %x, %d bytes", u[:8], len(u))
	}
	var pseudo uint16
	if v6 {
		ip := header.IPv6(f[header.EthernetLen:])
		s, d := ip.Src(), ip.Dst()
		if netip.AddrFrom16(s) != fam.gw || netip.AddrFrom16(d) != fam.guest || ip.PayloadLen() != len(u) {
			t.Fatalf("IPv6 header %x", f[header.EthernetLen:hl])
		}
		pseudo = checksum.PseudoHeaderIPv6(&s, &d, header.ProtoUDP, uint32(len(u)))
	} else {
		ip, err := header.ParseIPv4(f[header.EthernetLen:])
		if err != nil || !ip.IsChecksumValid() || ip.SrcAddr() != fam.gw || ip.DstAddr() != fam.guest {
			t.Fatalf("IPv4 header %x (%v)", f[header.EthernetLen:hl], err)
		}
		pseudo = checksum.PseudoHeaderIPv4(ip.Src(), ip.Dst(), header.ProtoUDP, uint16(len(u)))
	}
	if got := be16(u[6:]); got != pseudo {
		t.Fatalf("checksum field %#x, want the pseudo-header sum %#x", got, pseudo)
	}
	p := f[hl:]
	if vh.GSOType == tap.GSONone {
		return [][]byte{p}
	}
	if vh.GSOType != tap.GSOUDPL4 || vh.GSOSize == 0 || len(p) <= int(vh.GSOSize) || len(p) > int(vh.GSOSize)*gsoMaxSegs {
		t.Fatalf("GSO type %d size %d for %d payload bytes", vh.GSOType, vh.GSOSize, len(p))
	}
	var segs [][]byte
	for len(p) > 0 {
		n := min(len(p), int(vh.GSOSize))
		segs = append(segs, p[:n])
		p = p[n:]
	}
	return segs
}

// TestStagedGSOFrames: datagrams from the peer become GSO_UDP_L4 frames of
// equal-size runs (a shorter one ends a run, an empty one travels alone),
// with partial checksums, carrying exactly the peer's datagrams in order.
func TestStagedGSOFrames(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			enterNetns(t)
			r, o := newOffRig(t, 64, true, true)
			const sport = 46000
			srv := peerFlow(t, r, fam, sport)
			var sizes []int
			for i := 0; i < 20; i++ {
				sizes = append(sizes, 1000)
			}
			sizes = append(sizes, 300, 1200, 1200, 1200, 0, 7, 7)
			for i := 0; i < 10; i++ {
				sizes = append(sizes, 1400)
			}
			var want [][]byte
			for i, s := range sizes {
				p := make([]byte, s)
				for k := range p {
					p[k] = byte(i*13 + k)
				}
				want = append(want, p)
				if _, err := unix.Write(srv.fd, p); err != nil {
					t.Fatal(err)
				}
			}
			r.waitFrames(t, 5)
			var got [][]byte
			frames := r.out.Frames()
			for i, f := range frames {
				got = append(got, segments(t, fam, srv.port, sport, f, o.Hdrs()[i])...)
			}
			if len(got) != len(want) {
				t.Fatalf("%d datagrams in %d frames, want %d", len(got), len(frames), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("datagram %d: %d bytes, want %d (or different content)", i, len(got[i]), len(want[i]))
				}
			}
			st := r.h.Stats
			if len(frames) != 5 || st.ToGuestGSO != 4 || st.ToGuest != uint64(len(sizes)) || st.ToGuestDropped != 0 {
				t.Fatalf("%d frames, stats %+v", len(frames), st)
			}
		})
	}
}

// TestPartialChecksums: with checksum offload only (no GSO), every datagram
// is read straight into its own frame, which carries the pseudo-header sum
// and a NEEDS_CSUM header; large datagrams take the same path with GSO on.
func TestPartialChecksums(t *testing.T) {
	for _, gso := range []bool{false, true} {
		enterNetns(t)
		r, o := newOffRig(t, 64, true, gso)
		fam := families[0]
		const sport = 46001
		srv := peerFlow(t, r, fam, sport)
		size := 1400
		if gso {
			size = stageMaxSize + 1
		}
		want := make([]byte, size)
		for k := range want {
			want[k] = byte(k)
		}
		for i := 0; i < 3; i++ {
			unix.Write(srv.fd, want)
			r.waitFrames(t, i+1)
		}
		for i, f := range r.out.Frames() {
			segs := segments(t, fam, srv.port, sport, f, o.Hdrs()[i])
			if len(segs) != 1 || !bytes.Equal(segs[0], want) || o.Hdrs()[i].GSOType != tap.GSONone {
				t.Fatalf("gso %v: frame %d: %d datagrams, header %+v", gso, i, len(segs), o.Hdrs()[i])
			}
		}
		if r.h.Stats.ToGuestGSO != 0 {
			t.Fatalf("stats %+v", r.h.Stats)
		}
	}
}

// TestAllocsStaged: the staged path allocates nothing either.
func TestAllocsStaged(t *testing.T) {
	enterNetns(t)
	r, _ := newOffRig(t, 64, false, true)
	srv := peerFlow(t, r, families[0], 46002)
	payload := make([]byte, 1400)
	before := r.h.Stats.ToGuest
	allocs := testing.AllocsPerRun(100, func() {
		unix.Write(srv.fd, payload)
		unix.Write(srv.fd, payload)
		r.l.Turn(time.Second)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per turn", allocs)
	}
	if got := r.h.Stats.ToGuest - before; got != 202 {
		t.Fatalf("%d datagrams to the guest, want 202", got)
	}
}

// setIfAddr6 adds addr/prefix to interface index ix (SIOCSIFADDR with
// struct in6_ifreq on an IPv6 socket).
func setIfAddr6(t *testing.T, ix int, addr netip.Addr, prefix uint32) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var req struct {
		addr   [16]byte
		prefix uint32
		index  int32
	}
	req.addr, req.prefix, req.index = addr.As16(), prefix, int32(ix)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCSIFADDR, uintptr(unsafe.Pointer(&req))); e != 0 {
		t.Fatalf("SIOCSIFADDR %v: %v", addr, e)
	}
}

// upTap creates tap name in the test's namespace with the device's default
// offloads, brings it up with configtest's guest addresses and returns the
// device and the tap's MAC address.
func upTap(t *testing.T, name string) (*tap.Device, [6]byte) {
	t.Helper()
	for _, k := range []string{"ipv6/conf/default/accept_dad", "ipv6/conf/all/accept_dad",
		"ipv4/conf/default/rp_filter", "ipv4/conf/all/rp_filter"} {
		os.WriteFile("/proc/sys/net/"+k, []byte("0"), 0o644)
	}
	fd, _, err := tap.CreateDevice(name)
	if err != nil {
		t.Skipf("no tap device: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	dev := tap.NewDevice(fd, 256, nil)
	if o := dev.Offloads(); !o.Csum || !o.USO {
		t.Skip("tap without offloads (" + tap.OffloadEnv + ")")
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	ifr, _ := unix.NewIfreq(name)
	if err := ifr.SetInet4Addr(configtest.Guest4.AsSlice()); err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCSIFADDR, ifr); err != nil {
		t.Fatal(err)
	}
	ifr, _ = unix.NewIfreq(name)
	ifr.SetInet4Addr([]byte{255, 255, 255, 0})
	if err := unix.IoctlIfreq(s, unix.SIOCSIFNETMASK, ifr); err != nil {
		t.Fatal(err)
	}
	ifr, _ = unix.NewIfreq(name)
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatal(err)
	}
	setIfAddr6(t, ifc.Index, configtest.Guest6, 64)
	return dev, [6]byte(ifc.HardwareAddr)
}

// TestGSOThroughTap: GSO_UDP_L4 frames with partial checksums written to a
// real tap are taken by the kernel and reach a socket in the namespace as
// the peer's datagrams, in order, each whole.
func TestGSOThroughTap(t *testing.T) {
	enterNetns(t)
	dev, mac := upTap(t, "gso0")
	cfg := testConfig()
	g := &guest.State{MAC: mac}
	l, err := loop.New(1024)
	if err != nil {
		t.Fatal(err)
	}
	l.OnTurnEnd(dev.Flush)
	ft := flow.New(1024)
	h, err := New(cfg, g, dev, l, ft)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	if h.stage == nil {
		t.Fatal("no staging area with a GSO-capable tap")
	}
	r := &rig{cfg: cfg, g: g, l: l, ft: ft, h: h}
	for k, fam := range families {
		sport := uint16(47000 + k)
		// The guest's socket, sharing the port with the flow's host
		// socket (both SO_REUSEADDR; the host one is connected to the
		// peer on loopback, so the kernel hands the tap's datagrams to
		// this one).
		af := unix.AF_INET
		if fam.guest.Is6() {
			af = unix.AF_INET6
		}
		gs, err := unix.Socket(af, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(gs)
		unix.SetsockoptInt(gs, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		unix.SetsockoptInt(gs, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		// An IPv6 address can still be tentative right after it was
		// added (EADDRNOTAVAIL): give it a moment.
		var berr error
		for try := 0; try < 40; try++ {
			if berr = unix.Bind(gs, sockaddrOf(netip.AddrPortFrom(fam.guest, sport))); berr != unix.EADDRNOTAVAIL {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if berr != nil {
			t.Fatal(berr)
		}
		tv := unix.Timeval{Sec: 2}
		unix.SetsockoptTimeval(gs, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		srv := peerFlow(t, r, fam, sport)
		var want [][]byte
		for i := 0; i < 100; i++ {
			size := 1400
			if i == 49 || i == 99 {
				size = 333
			}
			p := make([]byte, size)
			binary.BigEndian.PutUint32(p, uint32(i))
			want = append(want, p)
			if _, err := unix.Write(srv.fd, p); err != nil {
				t.Fatal(err)
			}
		}
		gsoBefore := h.Stats.ToGuestGSO
		buf := make([]byte, 65536)
		for i, w := range want {
			var n int
			deadline := time.Now().Add(2 * time.Second)
			for {
				n, _, err = unix.Recvfrom(gs, buf, unix.MSG_DONTWAIT)
				if err != unix.EAGAIN || time.Now().After(deadline) {
					break
				}
				l.Turn(10 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("%s: datagram %d: %v (stats %+v, tap %+v)", fam.name, i, err, h.Stats, dev.Stats)
			}
			if !bytes.Equal(buf[:n], w) {
				t.Fatalf("%s: datagram %d: %d bytes, want %d (or different content)", fam.name, i, n, len(w))
			}
		}
		if h.Stats.ToGuestGSO == gsoBefore || dev.Stats.DroppedOut != 0 {
			t.Fatalf("%s: stats %+v, tap %+v", fam.name, h.Stats, dev.Stats)
		}
	}
}
