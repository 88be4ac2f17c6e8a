// The broker's bind request, served in this process: what it binds and
// what it refuses.

package isolation

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBrokerBind serves the broker from a goroutine and asks it to bind
// sockets: a TCP and a UDP socket on privileged ports of 127.0.0.1 and ::1
// (as root: bound, and getsockname says so), a port of 1024 or more, port
// 0, and an address of the other family (refused with EINVAL, unbound).
func TestBrokerBind(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the broker binds with the supervisor's privileges")
	}
	sup, child, err := newBroker()
	if err != nil {
		t.Fatal(err)
	}
	go serveBroker(sup)
	broker = int(child.Fd())
	t.Cleanup(func() { broker = -1; child.Close() })

	sock := func(af, typ int) int {
		fd, err := unix.Socket(af, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	for _, c := range []struct {
		name    string
		af, typ int
		sa      unix.Sockaddr
		want    error
	}{
		{"tcp4 port 7", unix.AF_INET, unix.SOCK_STREAM, &unix.SockaddrInet4{Port: 7, Addr: [4]byte{127, 0, 0, 1}}, nil},
		{"udp4 port 9", unix.AF_INET, unix.SOCK_DGRAM, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{127, 0, 0, 1}}, nil},
		{"tcp6 port 7", unix.AF_INET6, unix.SOCK_STREAM, &unix.SockaddrInet6{Port: 7, Addr: [16]byte{15: 1}}, nil},
		{"port 1024", unix.AF_INET, unix.SOCK_STREAM, &unix.SockaddrInet4{Port: 1024, Addr: [4]byte{127, 0, 0, 1}}, unix.EINVAL},
		{"port 0", unix.AF_INET, unix.SOCK_STREAM, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}, unix.EINVAL},
		{"IPv4 address on IPv6 socket", unix.AF_INET6, unix.SOCK_STREAM, &unix.SockaddrInet4{Port: 7, Addr: [4]byte{127, 0, 0, 1}}, unix.EINVAL},
	} {
		t.Run(c.name, func(t *testing.T) {
			fd := sock(c.af, c.typ)
			err := Bind(fd, c.sa)
			if !errors.Is(err, c.want) && err != c.want {
				t.Fatalf("Bind: %v, want %v", err, c.want)
			}
			got, gerr := unix.Getsockname(fd)
			if gerr != nil {
				t.Fatal(gerr)
			}
			var port int
			switch a := got.(type) {
			case *unix.SockaddrInet4:
				port = a.Port
			case *unix.SockaddrInet6:
				port = a.Port
			}
			if c.want == nil && port == 0 {
				t.Errorf("Bind said nil, but the socket is not bound")
			}
			if c.want != nil && port != 0 {
				t.Errorf("refused, but the socket is bound to port %d", port)
			}
		})
	}
}
