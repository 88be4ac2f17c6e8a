// Tests of the flow sockets themselves: the ports they bind.
package udp

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFlowSocketFallbackPort checks that a flow whose guest port is taken
// on the host gets an ephemeral port no other socket holds, not one of the
// ports other flow sockets (SO_REUSEADDR) hold: that would give two flows
// to one peer the same 4-tuple, and one of them the other's answers. The
// namespace's ephemeral range is three ports, two of them held by flows to
// the same peer: every fallback must get the third, or fail when that one
// is taken too.
func TestFlowSocketFallbackPort(t *testing.T) {
	enterNetns(t)
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40002"), 0); err != nil {
		t.Skipf("ip_local_port_range: %v", err)
	}
	r := newRig(t, 16, false)
	srv := bindUDP(t, lo4, 50001) // outside the range
	sport := srv.port
	open := func(port uint16) (int, error) {
		return r.h.openFlowSocket(false, lo4, port, "", lo4, sport, 0, true, false)
	}
	localPort := func(fd int) int {
		sa, err := unix.Getsockname(fd)
		if err != nil {
			t.Fatal(err)
		}
		return sa.(*unix.SockaddrInet4).Port
	}
	// Two flows from guest ports 40000 and 40001, bound to them.
	for _, p := range []uint16{40000, 40001} {
		fd, err := open(p)
		if err != nil {
			t.Fatalf("flow from port %d: %v", p, err)
		}
		defer unix.Close(fd)
		if got := localPort(fd); got != int(p) {
			t.Fatalf("flow from port %d bound %d", p, got)
		}
	}
	// A port the guest uses that a host socket without SO_REUSEADDR
	// holds: the flow falls back to an ephemeral port.
	blocker, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(blocker)
	if err := unix.Bind(blocker, &unix.SockaddrInet4{Port: 50000, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		fd, err := open(50000)
		if err != nil {
			t.Fatalf("fallback %d: %v", i, err)
		}
		got := localPort(fd)
		unix.Close(fd)
		if got != 40002 {
			t.Fatalf("fallback %d bound port %d, which another flow to the same peer holds (want 40002, the free one)", i, got)
		}
	}
	// The fallback holds 40002 alone: a flow from guest port 40002
	// cannot share it, and a fallback finds no port left.
	fd, err := open(50000)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if fd2, err := open(40002); err == nil {
		got := localPort(fd2)
		unix.Close(fd2)
		t.Fatalf("flow from guest port 40002 bound %d while the fallback flow holds 40002 (want no port left)", got)
	}
}
