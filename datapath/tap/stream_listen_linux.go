// passt's listening socket: the UNIX socket qemu connects to, at -s PATH
// or the first free /tmp/passt_N.socket, made before the sandbox.

package tap

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// SocketProbeMax is how many /tmp/passt_N.socket names are tried, N from 1,
// as the C original's UNIX_SOCK_MAX.
const SocketProbeMax = 100

// ListenStream opens passt's listening socket: at path if given, else at
// the first /tmp/passt_N.socket (N from 1) that no live passt listens on.
// A socket file nobody listens on (a passt that died) is removed and taken
// over; one that accepts connections is someone's and is left alone: for
// a given path that is an error. The socket is non-blocking and
// close-on-exec, its backlog one: passt serves one guest at a time.
//
// path: -s PATH, "" to probe. Returns the descriptor and the path, or an
// error naming the path.
func ListenStream(path string) (int, string, error) {
	if path != "" {
		fd, err := listenAt(path)
		return fd, path, err
	}
	var last error
	for n := 1; n <= SocketProbeMax; n++ {
		p := fmt.Sprintf("/tmp/passt_%d.socket", n)
		fd, err := listenAt(p)
		if err == nil {
			return fd, p, nil
		}
		last = err
	}
	return -1, "", fmt.Errorf("no free /tmp/passt_N.socket (N 1 to %d): %w", SocketProbeMax, last)
}

// errInUse says that a live passt (or anything else) accepts on a path.
var errInUse = errors.New("in use: something accepts connections there")

// listenAt binds and listens on path, first removing a stale socket file.
func listenAt(path string) (int, error) {
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return -1, fmt.Errorf("socket path %s: too long", path)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return -1, fmt.Errorf("socket path %s: exists and is no socket", path)
		}
		if live(path) {
			return -1, fmt.Errorf("socket path %s: %w", path, errInUse)
		}
		os.Remove(path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket for %s: %w", path, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("binding %s: %w", path, err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listening on %s: %w", path, err)
	}
	return fd, nil
}

// live reports whether something accepts connections on the socket file
// path (a blocking connect that succeeds).
func live(path string) bool {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Connect(fd, &unix.SockaddrUnix{Name: path}) == nil
}
