// Fuzz targets for what raw and ping sockets return, and for the reply
// builder fed with it.
package icmp

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config/configtest"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/tap/taptest"
)

// rawReply4 is what a raw IPv4 socket returns for an echo reply.
func rawReply4(src netip.Addr, id, seq uint16, data []byte) []byte {
	b := make([]byte, 20+8+len(data))
	header.EncodeIPv4(b, header.IPv4Fields{TTL: 64, Proto: header.ProtoICMP, Src: src.As4(), Dst: [4]byte{127, 0, 0, 1}, PayloadLen: 8 + len(data)})
	m := header.ICMPv4(b[20:])
	m.SetIdent(id)
	m.SetSeq(seq)
	copy(m[8:], data)
	m.SetChecksum()
	return b
}

func FuzzParseRaw4(f *testing.F) {
	f.Add(rawReply4(netip.MustParseAddr("127.0.0.1"), 1, 2, []byte("data")))
	f.Add(rawReply4(netip.MustParseAddr("192.0.2.1"), 0xffff, 0, nil))
	f.Add([]byte{0x46, 0, 0, 24})
	f.Fuzz(func(t *testing.T, b []byte) {
		src, r, err := parseRaw4(b)
		if err == nil && (!src.Is4() || len(r.data)+28 > len(b)) {
			t.Fatalf("%v %d", src, len(r.data))
		}
	})
}

func FuzzParseEcho(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0, 2, 'x'}, false)
	f.Add([]byte{129, 0, 0, 0, 0, 1, 0, 2}, true)
	f.Add([]byte{129, 0, 0}, true)
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		r, err := parseEcho(b, v6)
		if err == nil && len(r.data) != len(b)-8 {
			t.Fatal("data length")
		}
	})
}

func FuzzParseSource(f *testing.F) {
	sa4 := make([]byte, unix.SizeofSockaddrInet4)
	binary.NativeEndian.PutUint16(sa4, unix.AF_INET)
	sa6 := make([]byte, unix.SizeofSockaddrInet6)
	binary.NativeEndian.PutUint16(sa6, unix.AF_INET6)
	sa6[23] = 1
	f.Add(sa4)
	f.Add(sa6)
	f.Add([]byte{10})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseSource(b)
		if err == nil && (!a.IsValid() || a.Is4In6()) {
			t.Fatal(a)
		}
	})
}

// FuzzReply: whatever a socket returns as reply data, the frame to the
// guest is well formed with valid checksums.
func FuzzReply(f *testing.F) {
	f.Add(false, uint16(1), []byte("abc"))
	f.Add(true, uint16(0xffff), make([]byte, 1500))
	f.Add(true, uint16(0), []byte{})
	out := taptest.New(1)
	h := &Handler{cfg: configtest.DualStack(), g: &guest.State{MAC: configtest.GuestMAC}, out: out}
	f.Fuzz(func(t *testing.T, v6 bool, seq uint16, data []byte) {
		out.Reset()
		fl := pingFlow{v6: v6, guestID: 77, lastSeq: -1, guestSrc: configtest.Guest4.As16(), guestDst: configtest.Gateway4.As16()}
		if v6 {
			fl.guestSrc, fl.guestDst = configtest.Guest6.As16(), configtest.Gateway6.As16()
		}
		h.reply(&fl, seq, data)
		if len(out.Frames()) != 1 {
			if len(data) < 65000 {
				t.Fatal("no reply")
			}
			return
		}
		fr := out.Frames()[0]
		if v6 {
			ip, proto, off, err := header.ParseIPv6(fr[14:])
			if err != nil || proto != header.ProtoICMPv6 {
				t.Fatal(err)
			}
			s, d := ip.Src(), ip.Dst()
			m := header.ICMPv6(ip[off:])
			if !m.IsChecksumValid(&s, &d) || m.Ident() != 77 || m.Seq() != seq {
				t.Fatal("bad ICMPv6 reply")
			}
		} else {
			ip, err := header.ParseIPv4(fr[14:])
			if err != nil || !ip.IsChecksumValid() {
				t.Fatal(err)
			}
			m := header.ICMPv4(ip.Payload())
			if !m.IsChecksumValid() || m.Ident() != 77 || m.Seq() != seq {
				t.Fatal("bad ICMP reply")
			}
		}
	})
}
