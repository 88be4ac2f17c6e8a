// Binding listeners to privileged ports: the sandboxed process runs in a
// user namespace of its own, whose capabilities do not reach the host's
// network namespace, so a port below ip_unprivileged_port_start is bound
// for it by the supervisor (isolation.Bind) while set-up lasts.

package sys

import (
	"errors"

	"golang.org/x/sys/unix"
)

// PrivilegedBind, if not nil, binds a socket the process may not bind
// itself (EACCES: a port below ip_unprivileged_port_start) with the
// privileges the program was started with. cmd/passt sets it to
// isolation.Bind before the datapath is built; tests leave it nil.
var PrivilegedBind func(fd int, sa unix.Sockaddr) error

// BindListener binds the listening socket fd to sa. On EACCES for a port
// below 1024 it asks PrivilegedBind; if that cannot help either (no
// supervisor, set-up over, or the supervisor is not privileged), the
// original EACCES is returned, which is what the user must see.
//
// Returns nil or the error of bind(2).
func BindListener(fd int, sa unix.Sockaddr) error {
	err := unix.Bind(fd, sa)
	if !errors.Is(err, unix.EACCES) || PrivilegedBind == nil || port(sa) >= 1024 {
		return err
	}
	if PrivilegedBind(fd, sa) == nil {
		return nil
	}
	return err
}

// port returns the port of an IPv4 or IPv6 sockaddr, 0 for another.
func port(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return 0
}
