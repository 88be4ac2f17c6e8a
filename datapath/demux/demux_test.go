package demux

import (
	"net/netip"
	"testing"

	"gopasst/datapath/config"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/packet"
)

// recorder is a protocol handler that checks and counts what it is given.
type recorder struct {
	t    testing.TB
	pkts int
}

func (r *recorder) FromGuest(pkts []packet.Packet) {
	for i := range pkts {
		p := &pkts[i]
		// Every offset a protocol will trust must lie inside the frame.
		if p.L3 < 0 || p.L4 < p.L3 || p.L4+p.L4Len > len(p.Frame) {
			r.t.Fatalf("packet offsets out of frame: L3 %d L4 %d L4Len %d frame %d", p.L3, p.L4, p.L4Len, len(p.Frame))
		}
		_ = p.L4Bytes()
		r.pkts++
	}
}

func testDemux(t testing.TB) (*Demux, *recorder, *recorder, *recorder, *int) {
	cfg := &config.Config{}
	cfg.V4.Enabled, cfg.V6.Enabled = true, true
	d := New(cfg, &guest.State{}, 64)
	tcp, udp, icmp := &recorder{t: t}, &recorder{t: t}, &recorder{t: t}
	d.TCP, d.UDP, d.ICMP = tcp, udp, icmp
	services := 0
	svc := func(*packet.Packet) error { services++; return nil }
	d.ARP, d.NDP, d.DHCP, d.DHCPv6 = svc, svc, svc, svc
	return d, tcp, udp, icmp, &services
}

// udp4 builds an Ethernet/IPv4/UDP frame.
func udp4(src, dst string, sport, dport uint16, payload int) []byte {
	b := make([]byte, header.EthernetLen+header.IPv4MinLen+header.UDPLen+payload)
	n := header.EncodeEthernet(b, [6]byte{0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55}, [6]byte{2, 0, 0, 0, 0, 1}, header.EtherTypeIPv4)
	n += header.EncodeIPv4(b[n:], header.IPv4Fields{TTL: 64, Proto: header.ProtoUDP,
		Src: netip.MustParseAddr(src).As4(), Dst: netip.MustParseAddr(dst).As4(),
		PayloadLen: header.UDPLen + payload})
	header.EncodeUDP(b[n:], sport, dport, payload)
	return b
}

func TestDispatch(t *testing.T) {
	d, _, udp, _, services := testDemux(t)
	d.Batch([][]byte{
		udp4("198.18.0.2", "198.18.0.1", 4000, 53, 10), // to the UDP handler
		udp4("0.0.0.0", "255.255.255.255", 68, 67, 10), // DHCP: a service
		udp4("127.0.0.1", "198.18.0.1", 4000, 53, 10),  // loopback source: dropped
		{1, 2, 3}, // malformed
	})
	if udp.pkts != 1 || *services != 1 {
		t.Fatalf("udp %d services %d, want 1 and 1", udp.pkts, *services)
	}
	if d.Stats.Malformed != 1 || d.Stats.Frames != 4 {
		t.Fatalf("stats %+v", d.Stats)
	}
	if d.g.SeenV4 != netip.MustParseAddr("198.18.0.2") {
		t.Fatalf("guest address not learned: %v", d.g.SeenV4)
	}
	if d.g.MAC != [6]byte{2, 0, 0, 0, 0, 1} {
		t.Fatalf("guest MAC not learned: %v", d.g.MAC)
	}
}

func TestBatchAllocs(t *testing.T) {
	d, _, _, _, _ := testDemux(t)
	frames := [][]byte{udp4("198.18.0.2", "198.18.0.1", 4000, 53, 100), udp4("198.18.0.2", "198.18.0.1", 4001, 53, 100)}
	if n := testing.AllocsPerRun(1000, func() { d.Batch(frames) }); n != 0 {
		t.Fatalf("%v allocations per batch", n)
	}
}

// FuzzBatch feeds arbitrary frames to the demultiplexer: it must never
// panic, and every packet it hands on must have offsets inside its frame.
func FuzzBatch(f *testing.F) {
	f.Add(udp4("198.18.0.2", "198.18.0.1", 4000, 53, 10))
	f.Add(udp4("0.0.0.0", "255.255.255.255", 68, 67, 300))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		d, _, _, _, _ := testDemux(t)
		d.Batch([][]byte{frame})
	})
}
