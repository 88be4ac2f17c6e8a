// relay.go: relay mode, the "trivial loop" between two peers that the
// ceiling measurement runs in passt's place.

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
)

// relayBufLen is each direction's copy buffer: as much as one read takes.
const relayBufLen = 4 << 20

// relayMain is relay mode: listen at -a and -b, print "ready" on out,
// accept one client on each, copy both ways until one side ends. It
// returns nil at a clean end, else the error.
func relayMain(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("streampeer relay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	pathA := fs.String("a", "", "first UNIX domain socket to listen on")
	pathB := fs.String("b", "", "second UNIX domain socket to listen on")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("relay: unexpected argument %q", fs.Arg(0))
	case *pathA == "" || *pathB == "":
		return errors.New("relay: give -a PATH_A and -b PATH_B")
	case *pathA == *pathB:
		return errors.New("relay: -a and -b must differ")
	}
	la, err := listenUnix(*pathA)
	if err != nil {
		return err
	}
	defer la.Close()
	lb, err := listenUnix(*pathB)
	if err != nil {
		return err
	}
	defer lb.Close()
	if _, err := fmt.Fprintln(out, "ready"); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}

	// Accept both at once: either client may come first, and the one
	// that does waits, unread, in its socket until the other is there.
	type accepted struct {
		c   *net.UnixConn
		err error
	}
	ca, cb := make(chan accepted, 1), make(chan accepted, 1)
	acceptOne := func(l *net.UnixListener, got chan<- accepted) {
		c, err := l.AcceptUnix()
		l.Close() // one client per side: later ones are refused
		got <- accepted{c, err}
	}
	go acceptOne(la, ca)
	go acceptOne(lb, cb)
	a, b := <-ca, <-cb
	if a.c != nil {
		defer a.c.Close()
	}
	if b.c != nil {
		defer b.c.Close()
	}
	if err := errors.Join(a.err, b.err); err != nil {
		return fmt.Errorf("relay: accept: %w", err)
	}

	errc := make(chan error, 2)
	go func() { errc <- copyStream(b.c, a.c) }()
	go func() { errc <- copyStream(a.c, b.c) }()
	if err := <-errc; err != nil && !isEnd(err) {
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}

// listenUnix listens on the UNIX stream socket path, first removing a
// socket file left there by an earlier run (any other kind of file is an
// error). The socket file is removed again when the listener closes.
func listenUnix(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("relay: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("relay: remove stale %s: %w", path, err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("relay: listen on %s: %w", path, err)
	}
	return l, nil
}

// copyStream copies src to dst, byte for byte, until src ends or either
// fails, and returns why (io.EOF at src's end). Both sides speak the same
// framing, so the copy carries whole frames without looking at them.
func copyStream(dst, src *net.UnixConn) error {
	buf := make([]byte, relayBufLen)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}
