// The supervisor as a broker during set-up: it opens /dev/net/tun for the
// sandboxed process, in the network namespace that process names, when
// only the supervisor may (started as root, the device mode 0600), and
// binds the sandboxed process's listening sockets to ports below
// ip_unprivileged_port_start, which only the supervisor may (started as
// root: the sandboxed process's capabilities belong to its own user
// namespace, which does not own the host's network namespace).

package isolation

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// carryBroker names the sandboxed process's end of the broker socket among
// the carried descriptors.
const carryBroker = "isolation-broker"

// Broker requests and answers: one byte each, the descriptors as
// SCM_RIGHTS. An answer is brokerOK with the opened descriptor, or an
// errno number as its byte.
const (
	brokerOpenTun = 't'
	// brokerBind: the socket as SCM_RIGHTS, and after the byte the
	// address (bindRequest); the answer carries no descriptor.
	brokerBind = 'b'
	brokerOK   = 0
)

// bindRequest is the payload of a brokerBind request: family (1 byte:
// 4 or 6), port (2, big-endian), address (4 or 16), IPv6 scope (4,
// big-endian; IPv6 only).
const (
	bindRequest4 = 1 + 1 + 2 + 4
	bindRequest6 = 1 + 1 + 2 + 16 + 4
)

// ErrNoBroker is returned by OpenTun when no supervisor serves requests:
// this is not the sandboxed process, or set-up is over (Prefork closes the
// broker).
var ErrNoBroker = errors.New("no supervisor to ask")

// broker holds the sandboxed process's end of the broker socket, -1 if
// none.
var broker = -1

// newBroker makes the socket pair: the supervisor keeps the first end,
// the sandboxed process gets the second (carried under carryBroker).
func newBroker() (sup, sandboxed *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("broker socket: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "broker"), os.NewFile(uintptr(fds[1]), "broker"), nil
}

// serveBroker answers the sandboxed process's requests on sup until it
// closes its end (Prefork, or its exit), then closes sup. It runs in the
// supervisor, which still has the privileges it was started with: the
// only request it serves is opening /dev/net/tun, read-write, in the
// network namespace whose descriptor comes with the request, so that the
// tap device is created there (the kernel binds a tun file to the
// network namespace of its opener). Nothing else can be asked of it.
func serveBroker(sup *os.File) {
	defer sup.Close()
	fd := int(sup.Fd())
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return
		}
		var got []int
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if fds, err := unix.ParseUnixRights(&m); err == nil {
					got = append(got, fds...)
				}
			}
		}
		answer, out := byte(unix.EINVAL), -1
		switch {
		case buf[0] == brokerOpenTun && n == 1 && len(got) == 1:
			if t, err := openTunIn(got[0]); err == nil {
				answer, out = brokerOK, t
			} else {
				answer = errnoByte(err)
			}
		case buf[0] == brokerBind && len(got) == 1:
			answer = errnoByte(bindFor(got[0], buf[1:n]))
		}
		for _, g := range got {
			unix.Close(g)
		}
		var rights []byte
		if out >= 0 {
			rights = unix.UnixRights(out)
		}
		if err := unix.Sendmsg(fd, []byte{answer}, rights, nil, 0); err != nil {
			slog.Debug(fmt.Sprintf("broker: answering: %v", err))
		}
		if out >= 0 {
			unix.Close(out)
		}
	}
}

// bindFor binds the socket fd, which the sandboxed process made, to the
// address in req (bindRequest), with the supervisor's credentials: the
// kernel checks CAP_NET_BIND_SERVICE of the caller of bind(2), not of the
// socket's maker. Only TCP and UDP sockets of the address's family are
// bound, and only to ports below 1024 (nothing else needs the broker).
//
// Returns nil, or the error (EINVAL for a malformed request).
func bindFor(fd int, req []byte) error {
	var sa unix.Sockaddr
	switch {
	case len(req) == bindRequest4-1 && req[0] == 4:
		a := &unix.SockaddrInet4{Port: int(req[1])<<8 | int(req[2])}
		copy(a.Addr[:], req[3:7])
		sa = a
	case len(req) == bindRequest6-1 && req[0] == 6:
		a := &unix.SockaddrInet6{Port: int(req[1])<<8 | int(req[2])}
		copy(a.Addr[:], req[3:19])
		a.ZoneId = uint32(req[19])<<24 | uint32(req[20])<<16 | uint32(req[21])<<8 | uint32(req[22])
		sa = a
	default:
		return unix.EINVAL
	}
	port := req[1:3]
	if p := int(port[0])<<8 | int(port[1]); p == 0 || p >= 1024 {
		return unix.EINVAL
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return err
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return err
	}
	if (req[0] == 4) != (domain == unix.AF_INET) || (domain != unix.AF_INET && domain != unix.AF_INET6) ||
		(typ != unix.SOCK_STREAM && typ != unix.SOCK_DGRAM) {
		return unix.EINVAL
	}
	return unix.Bind(fd, sa)
}

// Bind asks the supervisor to bind the socket fd (TCP or UDP, IPv4 or
// IPv6) to sa, a port below 1024 that the sandboxed process may not bind
// itself. Call it during set-up, before Prefork: listeners of fixed ports
// are opened then.
//
// Returns nil once fd is bound, ErrNoBroker if there is no supervisor to
// ask, or the supervisor's error (as a unix.Errno).
func Bind(fd int, sa unix.Sockaddr) error {
	if broker < 0 {
		return ErrNoBroker
	}
	var req []byte
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		req = append([]byte{brokerBind, 4, byte(a.Port >> 8), byte(a.Port)}, a.Addr[:]...)
	case *unix.SockaddrInet6:
		req = append([]byte{brokerBind, 6, byte(a.Port >> 8), byte(a.Port)}, a.Addr[:]...)
		req = append(req, byte(a.ZoneId>>24), byte(a.ZoneId>>16), byte(a.ZoneId>>8), byte(a.ZoneId))
	default:
		return unix.EAFNOSUPPORT
	}
	if err := unix.Sendmsg(broker, req, unix.UnixRights(fd), nil, 0); err != nil {
		return fmt.Errorf("asking the supervisor: %w", err)
	}
	buf := make([]byte, 1)
	for {
		n, _, _, _, err := unix.Recvmsg(broker, buf, nil, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n != 1 {
			return fmt.Errorf("the supervisor's answer: %v", err)
		}
		if buf[0] != brokerOK {
			return unix.Errno(buf[0])
		}
		return nil
	}
}

// errnoByte returns err's errno as one byte (0, brokerOK, for nil), EIO
// if it has none that fits.
func errnoByte(err error) byte {
	if err == nil {
		return brokerOK
	}
	var e unix.Errno
	if errors.As(err, &e) && e > 0 && e < 256 {
		return byte(e)
	}
	return byte(unix.EIO)
}

// openTunIn opens /dev/net/tun (non-blocking, close-on-exec) from a thread
// that enters network namespace netns first. The thread is never unlocked:
// it ends with its goroutine, instead of going back to the pool from
// another namespace.
func openTunIn(netns int) (int, error) {
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(netns, unix.CLONE_NEWNET); err != nil {
			done <- result{-1, err}
			return
		}
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		done <- result{fd, err}
	}()
	r := <-done
	return r.fd, r.err
}

// OpenTun asks the supervisor to open /dev/net/tun in the network
// namespace netns (a namespace descriptor: /proc/thread-self/ns/net of the
// thread that is in it) and returns the descriptor, for a sandboxed
// process that may not open the device itself (mode 0600, and the
// supervisor was started as root). Call it during set-up, before Prefork.
//
// Returns the descriptor, ErrNoBroker if there is no supervisor to ask, or
// the supervisor's error (as a unix.Errno).
func OpenTun(netns int) (int, error) {
	if broker < 0 {
		return -1, ErrNoBroker
	}
	if err := unix.Sendmsg(broker, []byte{brokerOpenTun}, unix.UnixRights(netns), nil, 0); err != nil {
		return -1, fmt.Errorf("asking the supervisor: %w", err)
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(broker, buf, oob, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n != 1 {
			return -1, fmt.Errorf("the supervisor's answer: %v", err)
		}
		if buf[0] != brokerOK {
			return -1, unix.Errno(buf[0])
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			return -1, errors.New("the supervisor's answer carries no descriptor")
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			return -1, errors.New("the supervisor's answer carries no descriptor")
		}
		return fds[0], nil
	}
}

// closeBroker ends the broker's service: the supervisor sees the end of
// the socket and stops answering.
func closeBroker() {
	if broker >= 0 {
		unix.Close(broker)
		broker = -1
	}
}
