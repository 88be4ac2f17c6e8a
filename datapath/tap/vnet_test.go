// Tests of the virtio-net header codec, its fuzz target, and of the tap
// device with and without the header in a namespace of the test's own.

package tap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestVnetRoundTrip: Encode and DecodeVnetHdr agree, little-endian fields
// at the kernel's offsets.
func TestVnetRoundTrip(t *testing.T) {
	h := VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	var b [VnetHdrLen]byte
	h.Encode(b[:])
	want := []byte{1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0}
	if !bytes.Equal(b[:], want) {
		t.Fatalf("encoded % x, want % x", b, want)
	}
	g, err := DecodeVnetHdr(b[:], 65000)
	if err != nil || g != h {
		t.Fatalf("decoded %+v, %v; want %+v", g, err, h)
	}
}

// TestVnetMalformed: every malformed header is an error, never a panic.
func TestVnetMalformed(t *testing.T) {
	cases := []struct {
		name  string
		b     []byte
		flen  int
		isErr error
	}{
		{"short", []byte{0, 0, 0}, 100, ErrVnetShort},
		{"csum past end", []byte{1, 0, 0, 0, 0, 0, 90, 0, 16, 0}, 100, ErrVnetCsum},
		{"unknown gso", []byte{0, 2, 0, 0, 0, 5, 0, 0, 0, 0}, 100, ErrVnetGSOType},
		{"gso without size", []byte{1, 4, 74, 0, 0, 0, 54, 0, 16, 0}, 100, ErrVnetGSOSize},
	}
	for _, c := range cases {
		if _, err := DecodeVnetHdr(c.b, c.flen); !errors.Is(err, c.isErr) {
			t.Errorf("%s: %v, want %v", c.name, err, c.isErr)
		}
	}
	// ECN on a TCP type is fine.
	if _, err := DecodeVnetHdr([]byte{1, GSOTCPv6 | GSOECN, 74, 0, 0xa0, 5, 54, 0, 16, 0}, 9000); err != nil {
		t.Errorf("TCPv6|ECN: %v", err)
	}
}

// FuzzDecodeVnetHdr: any bytes and frame length give a header or an
// error; an accepted header's checksum field lies inside the frame and
// re-encodes to the same bytes.
func FuzzDecodeVnetHdr(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 60)
	f.Add([]byte{1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0}, 65549)
	f.Add([]byte{1, 4, 74, 0, 0xa0, 0x05, 54, 0, 16, 0}, 65549)
	f.Add([]byte{1, 0x81, 54, 0, 0xa8, 0x05, 34, 0, 16, 0}, 100)
	f.Add([]byte{1, 5, 42, 0, 0xa0, 0x05, 34, 0, 6, 0}, 3000)
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, 10)
	f.Add([]byte{2}, 0)
	f.Fuzz(func(t *testing.T, b []byte, flen int) {
		h, err := DecodeVnetHdr(b, flen)
		if err != nil {
			return
		}
		if h.Flags&VnetNeedsCsum != 0 && int(h.CsumStart)+int(h.CsumOffset)+2 > flen {
			t.Fatalf("accepted checksum at %d+%d in a frame of %d", h.CsumStart, h.CsumOffset, flen)
		}
		if h.GSOType&^GSOECN != GSONone && h.GSOSize == 0 {
			t.Fatal("accepted GSO without a size")
		}
		var e [VnetHdrLen]byte
		h.Encode(e[:])
		if !bytes.Equal(e[:], b[:VnetHdrLen]) {
			t.Fatalf("re-encoded % x from % x", e, b[:VnetHdrLen])
		}
	})
}

// tapNS creates a network namespace and a tap in it (with the offloads
// OffloadEnv selects), up at mtu, with an address and a permanent
// neighbour so that frames written to it are delivered locally. Returns
// the descriptor and the namespace's name.
func tapNS(t *testing.T, mode string, mtu int) (int, string) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and a tap device")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8)")
	}
	t.Setenv(OffloadEnv, mode)
	ns := fmt.Sprintf("gptap%d-%s", os.Getpid(), mode)
	ipCmd(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	errc := make(chan error, 1)
	var fd int
	go func() {
		runtime.LockOSThread() // the thread dies in the namespace
		nfd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(nfd, unix.CLONE_NEWNET)
			unix.Close(nfd)
		}
		if err == nil {
			fd, _, err = CreateDevice("tap0")
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	ipCmd(t, "-n", ns, "link", "set", "tap0", "mtu", strconv.Itoa(mtu), "address", "02:00:00:00:00:02", "up")
	ipCmd(t, "-n", ns, "addr", "add", "198.18.0.2/24", "dev", "tap0")
	return fd, ns
}

// ipCmd runs ip(8), failing t on error.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// superFrame builds into f an IPv4 TCP frame of plen payload bytes from
// 198.18.0.1:5000 to the namespace's 198.18.0.2:5001 with a partial
// checksum (the pseudo-header sum, as a TSO sender leaves it). Returns its
// length.
func superFrame(f []byte, plen int) int {
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0], ip[1] = 0x45, 0
	binary.BigEndian.PutUint16(ip[2:], uint16(20+20+plen))
	ip[6], ip[8], ip[9] = 0x40, 64, 6
	copy(ip[12:], []byte{198, 18, 0, 1, 198, 18, 0, 2})
	var s uint32
	for i := 0; i < 20; i += 2 {
		s += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(s))
	tcp := f[34 : 54+plen]
	binary.BigEndian.PutUint16(tcp[0:], 5000)
	binary.BigEndian.PutUint16(tcp[2:], 5001)
	tcp[12], tcp[13] = 5<<4, 0x18
	binary.BigEndian.PutUint16(tcp[14:], 1000)
	return 54 + plen
}

// rxPackets returns the tap's received packet and error counters in ns.
func rxPackets(t *testing.T, ns string) (pkts, errs int64) {
	read := func(n string) int64 {
		out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/sys/class/net/tap0/statistics/"+n).Output()
		if err != nil {
			t.Fatal(err)
		}
		v, _ := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
		return v
	}
	return read("rx_packets"), read("rx_errors") + read("rx_dropped")
}

// TestDeviceOffload: a tap opened with offloads carries a virtio-net
// header both ways; the kernel takes a 60000-byte TCP super-frame at MTU
// 1500 with GSO and a partial checksum, and refuses a malformed header.
// Without offloads there is no header and frames go out bare.
func TestDeviceOffload(t *testing.T) {
	fd, ns := tapNS(t, "", 1500)
	d := NewDevice(fd, 4, nil)
	if o := d.Offloads(); d.VnetHdrLen() != VnetHdrLen || !o.Csum || !o.TSO || !o.USO {
		t.Fatalf("vnet header %d, offloads %+v: want %d, all", d.VnetHdrLen(), o, VnetHdrLen)
	}
	p0, _ := rxPackets(t, ns)
	n := superFrame(d.Frame(), 60000)
	d.CommitOffload(n, &VnetHdr{Flags: VnetNeedsCsum, GSOType: GSOTCPv4, HdrLen: 54, GSOSize: 1460, CsumStart: 34, CsumOffset: 16})
	d.Flush()
	if d.Stats.FramesOut != 1 || d.Stats.DroppedOut != 0 || d.Stats.GSOOut != 1 {
		t.Fatalf("GSO frame not taken: %+v", d.Stats)
	}
	if p, _ := rxPackets(t, ns); p != p0+1 {
		t.Fatalf("tap received %d packets, want 1", p-p0)
	}
	// A GSO type the kernel does not know is refused (EINVAL) and counted.
	n = superFrame(d.Frame(), 3000)
	d.CommitOffload(n, &VnetHdr{GSOType: 9, GSOSize: 1460})
	d.Flush()
	if d.Stats.DroppedOut != 1 {
		t.Fatalf("bad virtio-net header not refused: %+v", d.Stats)
	}
	// A plain Commit writes an empty header: a complete frame.
	n = superFrame(d.Frame(), 100)
	d.Commit(n)
	d.Flush()
	if d.Stats.FramesOut != 2 || d.Stats.DroppedOut != 1 {
		t.Fatalf("plain frame after a header: %+v", d.Stats)
	}

	fd2, ns2 := tapNS(t, "off", 1500)
	d2 := NewDevice(fd2, 4, nil)
	if d2.VnetHdrLen() != 0 || d2.Offloads() != (Offloads{}) {
		t.Fatalf("with %s=off: vnet header %d, offloads %+v", OffloadEnv, d2.VnetHdrLen(), d2.Offloads())
	}
	q0, _ := rxPackets(t, ns2)
	n = superFrame(d2.Frame(), 1000)
	d2.Commit(n)
	d2.Flush()
	if q, _ := rxPackets(t, ns2); d2.Stats.FramesOut != 1 || q != q0+1 {
		t.Fatalf("bare frame: %+v, %d received", d2.Stats, q-q0)
	}
}
