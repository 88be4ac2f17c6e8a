// The sockets opened before the sandbox: one raw ICMP socket per family, if
// the process may open them.
package icmp

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/datapath/header"
)

// Sockets are the raw echo sockets Prepare opened, or that were carried
// into the sandboxed process (SocketsFromFiles). A descriptor is -1 if its
// family has none (family disabled, --no-icmp, or no CAP_NET_RAW).
type Sockets struct {
	V4, V6 int
	files  []*os.File // carried files owning V4/V6, kept from their finalizers
}

// NoSockets returns Sockets without raw sockets (ping sockets only).
func NoSockets() *Sockets { return &Sockets{V4: -1, V6: -1} }

// FDs returns the open descriptors, to keep across the sandbox set-up.
func (s *Sockets) FDs() []int {
	var fds []int
	for _, fd := range []int{s.V4, s.V6} {
		if fd >= 0 {
			fds = append(fds, fd)
		}
	}
	return fds
}

// Close closes the open descriptors.
func (s *Sockets) Close() {
	if s.files != nil {
		for _, f := range s.files {
			f.Close()
		}
		s.files, s.V4, s.V6 = nil, -1, -1
		return
	}
	if s.V4 >= 0 {
		unix.Close(s.V4)
		s.V4 = -1
	}
	if s.V6 >= 0 {
		unix.Close(s.V6)
		s.V6 = -1
	}
}

// Prepare opens a raw ICMP socket for each enabled family, while the
// process still has CAP_NET_RAW (call it before the user stage drops
// privileges and before the sandbox). Without CAP_NET_RAW it opens none
// and returns no error: the handler then uses ping sockets. With -o, the
// sockets are bound to that address.
//
// cfg: the configuration. Returns the sockets, or an error for an
// unexpected failure (the sockets already opened are closed).
func Prepare(cfg *config.Config) (*Sockets, error) {
	s := NoSockets()
	if cfg.NoICMP {
		return s, nil
	}
	var err error
	if cfg.V4.Enabled {
		if s.V4, err = openRaw(false, cfg); err != nil {
			return nil, err
		}
	}
	if cfg.V6.Enabled {
		if s.V6, err = openRaw(true, cfg); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// OpenRaw opens the raw echo socket of one family as a file, in the shape
// isolation.Carry wants: the invoked process (root) opens it, the
// sandboxed process receives it. It returns nil and no error when there is
// nothing to carry: --no-icmp, the family disabled, or no CAP_NET_RAW.
//
//	f4, err := isolation.Carry("icmp4", func() (*os.File, error) { return icmp.OpenRaw(cfg, false) })
//	f6, err := isolation.Carry("icmp6", func() (*os.File, error) { return icmp.OpenRaw(cfg, true) })
//	pre, err := icmp.SocketsFromFiles(f4, f6) // in the sandboxed process
//
// cfg: the configuration; v6: ICMPv6. Returns the file or an error.
func OpenRaw(cfg *config.Config, v6 bool) (*os.File, error) {
	ip, name := &cfg.V4, "icmp4-raw"
	if v6 {
		ip, name = &cfg.V6, "icmp6-raw"
	}
	if cfg.NoICMP || !ip.Enabled {
		return nil, nil
	}
	fd, err := openRaw(v6, cfg)
	if err != nil || fd < 0 {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// SocketsFromFiles builds Sockets from raw sockets carried as files (nil:
// none for that family). The files stay owned by the result: Close closes
// them. The descriptors keep their non-blocking mode (the handler passes
// MSG_DONTWAIT on every call anyway).
//
// v4, v6: the files, as isolation.Carry returned them. Returns the sockets
// or an error if a file has no descriptor.
func SocketsFromFiles(v4, v6 *os.File) (*Sockets, error) {
	s := NoSockets()
	for _, c := range []struct {
		f  *os.File
		fd *int
	}{{v4, &s.V4}, {v6, &s.V6}} {
		if c.f == nil {
			continue
		}
		rc, err := c.f.SyscallConn()
		if err != nil {
			return nil, fmt.Errorf("raw ICMP socket %s: %w", c.f.Name(), err)
		}
		if err := rc.Control(func(fd uintptr) { *c.fd = int(fd) }); err != nil {
			return nil, fmt.Errorf("raw ICMP socket %s: %w", c.f.Name(), err)
		}
		s.files = append(s.files, c.f)
	}
	return s, nil
}

// openRaw opens the raw echo socket of one family, with a filter letting
// only echo replies through.
//
// v6: ICMPv6 instead of ICMP; cfg: for -o. Returns the descriptor, -1 with
// no error if the process lacks the privilege, or an error.
func openRaw(v6 bool, cfg *config.Config) (int, error) {
	af, proto, name := unix.AF_INET, unix.IPPROTO_ICMP, "ICMP"
	if v6 {
		af, proto, name = unix.AF_INET6, unix.IPPROTO_ICMPV6, "ICMPv6"
	}
	fd, err := unix.Socket(af, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return -1, nil
	}
	if errors.Is(err, unix.EAFNOSUPPORT) {
		return -1, nil // IPv6 disabled in the kernel
	}
	if err != nil {
		return -1, fmt.Errorf("raw %s socket: %w", name, err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("raw %s socket: %s: %w", name, what, err)
	}
	if v6 {
		// A set bit blocks its type (ICMP6_FILTER_WILLBLOCK).
		var f unix.ICMPv6Filter
		for i := range f.Data {
			f.Data[i] = 0xffffffff
		}
		t := header.ICMPv6EchoReply
		f.Data[t>>5] &^= 1 << (t & 31)
		if err := unix.SetsockoptICMPv6Filter(fd, unix.IPPROTO_ICMPV6, unix.ICMPV6_FILTER, &f); err != nil {
			return fail("ICMP6_FILTER", err)
		}
		if a := cfg.V6.Outbound; a.IsValid() && a.Is6() {
			if err := unix.Bind(fd, &unix.SockaddrInet6{Addr: a.As16()}); err != nil {
				return fail("bind", err)
			}
		}
	} else {
		// struct icmp_filter: a set bit blocks its type.
		if err := unix.SetsockoptInt(fd, unix.SOL_RAW, unix.ICMP_FILTER, int(^uint32(1<<header.ICMPv4EchoReply))); err != nil {
			return fail("ICMP_FILTER", err)
		}
		if a := cfg.V4.Outbound; a.IsValid() && a.Is4() {
			if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: a.As4()}); err != nil {
				return fail("bind", err)
			}
		}
	}
	return fd, nil
}
