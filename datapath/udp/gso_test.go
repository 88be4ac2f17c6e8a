// Guest to host with UDP_SEGMENT: message layout, datagram boundaries kept
// end to end, and the fallback when the kernel refuses to segment.
package udp

import (
	"bytes"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config/configtest"
	"gopasst/datapath/flow"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
)

// TestGSOBuild: runs are cut where the size changes, after a shorter
// datagram, at gsoMaxSegs datagrams and at gsoMaxBytes bytes; an empty
// datagram travels alone; maxSegs 1 gives one message per datagram.
func TestGSOBuild(t *testing.T) {
	rep := func(n, size int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = size
		}
		return s
	}
	cat := func(parts ...[]int) []int {
		var s []int
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	cases := []struct {
		sizes   []int
		maxSegs int
		want    []int32 // datagrams per message
	}{
		{[]int{100}, gsoMaxSegs, []int32{1}},
		{rep(5, 1000), gsoMaxSegs, []int32{5}},
		{rep(5, 1000), 1, []int32{1, 1, 1, 1, 1}},
		{cat(rep(3, 1000), []int{500}, rep(2, 1000)), gsoMaxSegs, []int32{4, 2}},
		{cat(rep(3, 1000), []int{1400}, rep(2, 1400)), gsoMaxSegs, []int32{3, 3}},
		{cat(rep(2, 1000), []int{0}, rep(2, 1000)), gsoMaxSegs, []int32{2, 1, 2}},
		{[]int{0, 0}, gsoMaxSegs, []int32{1, 1}},
		{rep(100, 100), gsoMaxSegs, []int32{gsoMaxSegs, 100 - gsoMaxSegs}},
		{rep(60, 1400), gsoMaxSegs, []int32{gsoMaxBytes / 1400, 60 - gsoMaxBytes/1400}},
		{rep(3, 65000), gsoMaxSegs, []int32{1, 1, 1}},
		{[]int{1000, 999, 999}, gsoMaxSegs, []int32{2, 1}},
	}
	g := newGSOMsgs(Batch)
	for _, c := range cases {
		run := make([][]byte, len(c.sizes))
		for i, s := range c.sizes {
			run[i] = make([]byte, s)
		}
		n := g.build(run, c.maxSegs)
		if fmt.Sprint(g.segs[:n]) != fmt.Sprint(c.want) {
			t.Errorf("sizes %v (max %d): messages %v, want %v", c.sizes, c.maxSegs, g.segs[:n], c.want)
			continue
		}
		for m := 0; m < n; m++ {
			h := &g.hdrs[m].Hdr
			first := run[g.first[m]]
			if int(h.Iovlen) != int(g.segs[m]) || (len(first) > 0 && h.Iov.Base != &first[0]) {
				t.Errorf("sizes %v: message %d points at the wrong datagrams", c.sizes, m)
			}
			if (h.Controllen != 0) != (g.segs[m] > 1) {
				t.Errorf("sizes %v: message %d: control length %d with %d datagrams", c.sizes, m, h.Controllen, g.segs[m])
			}
		}
	}
}

// gsoRun returns a guest run of datagrams with the given payload sizes,
// each payload distinct, and the payloads.
func gsoRun(fam family, sport, dport uint16, sizes []int) ([]packet.Packet, [][]byte) {
	var pkts []packet.Packet
	var want [][]byte
	for i, s := range sizes {
		p := make([]byte, s)
		for k := range p {
			p[k] = byte(i*31 + k)
		}
		pkts = append(pkts, guestUDP(fam.guest, sport, fam.gw, dport, 64, p))
		want = append(want, p)
	}
	return pkts, want
}

// recvAll reads len(want) datagrams from s and compares them with want.
func (s *server) recvAll(t *testing.T, want [][]byte) {
	t.Helper()
	for i, w := range want {
		got, _ := s.recv(t)
		if !bytes.Equal(got, w) {
			t.Fatalf("datagram %d: %d bytes, want %d (or different content)", i, len(got), len(w))
		}
	}
}

// TestGSOSend: a batch of one flow with runs of equal sizes, a short
// datagram, an empty one and a size change reaches the host socket as the
// guest's datagrams, in order and with their boundaries, through
// UDP_SEGMENT messages.
func TestGSOSend(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			enterNetns(t)
			r := newRig(t, 64, false)
			srv := listenUDP(t, fam.loopback, 0)
			unix.SetsockoptInt(srv.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
			var sizes []int
			for i := 0; i < 50; i++ {
				sizes = append(sizes, 1000)
			}
			sizes = append(sizes, 300, 1200, 1200, 1200, 0, 7, 7)
			for i := 0; i < 60; i++ {
				sizes = append(sizes, 1400)
			}
			pkts, want := gsoRun(fam, 45000, srv.port, sizes)
			r.h.FromGuest(pkts)
			srv.recvAll(t, want)
			st := r.h.Stats
			if st.ToHost != uint64(len(sizes)) || st.ToHostDropped != 0 {
				t.Fatalf("stats %+v", st)
			}
			// 50+300 | 1200 x3 | 0 | 7 7 | 46 x 1400 | 14 x 1400
			if st.ToHostGSO != 5 {
				t.Fatalf("%d UDP_SEGMENT messages, want 5", st.ToHostGSO)
			}
		})
	}
}

// setLoopbackMTU sets the MTU of lo in the test's namespace.
func setLoopbackMTU(t *testing.T, mtu uint32) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint32(mtu)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFMTU, ifr); err != nil {
		t.Fatal(err)
	}
}

// TestGSOFallback: datagrams larger than the path MTU cannot be segments
// (the kernel refuses UDP_SEGMENT with EINVAL): they go one per message,
// fragmented by the kernel, none lost, and the flow stops asking for
// segmentation.
func TestGSOFallback(t *testing.T) {
	enterNetns(t)
	setLoopbackMTU(t, 1500)
	r := newRig(t, 64, false)
	srv := listenUDP(t, lo4, 0)
	sizes := []int{3000, 3000, 3000, 3000, 100, 100}
	pkts, want := gsoRun(families[0], 45001, srv.port, sizes)
	r.h.FromGuest(pkts)
	srv.recvAll(t, want)
	key := flow.MakeKey(header.ProtoUDP, configtest.Guest4, 45001, configtest.Gateway4, srv.port)
	i, ok := r.ft.Lookup(&key)
	if !ok {
		t.Fatal("no flow")
	}
	st := r.h.Stats
	if !r.h.flows[i].noGSO || st.ToHost != uint64(len(sizes)) || st.ToHostDropped != 0 || st.ToHostGSO != 0 {
		t.Fatalf("noGSO %v, stats %+v", r.h.flows[i].noGSO, st)
	}
	// Later batches of the flow go one by one from the start.
	r.h.FromGuest(pkts)
	srv.recvAll(t, want)
	if st := r.h.Stats; st.ToHost != 2*uint64(len(sizes)) || st.ToHostDropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}
