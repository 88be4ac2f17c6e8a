// Resets, refused connects and refusals, and the descriptors and slots
// left after many connections.

package splice

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// establish reads one byte the client sends through, so that the spliced
// connection is up end to end.
func establish(t *testing.T, c, s *net.TCPConn) {
	t.Helper()
	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(s, b[:]); err != nil {
		t.Fatal(err)
	}
}

// expectReset connects a client to the world's listener and checks that it
// sees a reset: at once (the reset can arrive before the client's connect
// returns) or on its first read.
func expectReset(t *testing.T, w *world) {
	t.Helper()
	c, err := net.DialTimeout("tcp", w.lnAddr.String(), 10*time.Second)
	if err == nil {
		_, err = readAll(c.(*net.TCPConn), 10*time.Second)
		c.Close()
	}
	if !isReset(err) {
		t.Fatalf("client got %v, want a reset", err)
	}
}

// TestReset closes one end with SO_LINGER 0, in both orders: the other end
// must see ECONNRESET, and the connection is counted as reset.
func TestReset(t *testing.T) {
	for _, clientResets := range []bool{true, false} {
		t.Run(map[bool]string{true: "client", false: "server"}[clientResets], func(t *testing.T) {
			srv := newServer(t, loopbackAddr(t, false))
			w := newWorld(t, Options{}, srv.addr)
			w.run()
			c := w.dial(t)
			defer c.Close()
			s := srv.next(t)
			defer s.Close()
			establish(t, c, s)
			resetter, other := c, s
			if !clientResets {
				resetter, other = s, c
			}
			resetter.SetLinger(0)
			resetter.Close()
			_, err := readAll(other, 10*time.Second)
			if !isReset(err) {
				t.Fatalf("the other end read %v, want a reset", err)
			}
			st := w.waitConns(0)
			if st.Reset != 1 || st.Closed != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestConnectRefused splices a client to a port nothing listens on: the
// client sees a reset, the connection is counted as refused, and no
// descriptor is left behind once the pools are topped up.
func TestConnectRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	w := newWorld(t, Options{}, dst)
	base := countFDs(t)
	w.run()
	for i := 0; i < 3; i++ {
		expectReset(t, w)
	}
	st := w.waitConns(0)
	if st.Refused != 3 || st.Connected != 0 || st.Accepted != 3 {
		t.Errorf("stats %+v", st)
	}
	w.do(w.h.Refill)
	if n := countFDs(t); n != base {
		t.Errorf("%d descriptors open, %d after New", n, base)
	}
}

// TestTooMany: beyond MaxConns, Connect refuses with a reset; the
// connections already open go on.
func TestTooMany(t *testing.T) {
	srv := newServer(t, loopbackAddr(t, false))
	w := newWorld(t, Options{MaxConns: 2}, srv.addr)
	w.run()
	var open []*net.TCPConn
	for i := 0; i < 2; i++ {
		c := w.dial(t)
		defer c.Close()
		s := srv.next(t)
		defer s.Close()
		establish(t, c, s)
		open = append(open, c)
	}
	expectReset(t, w)
	st, n := w.stats()
	if n != 2 || st.Refused != 1 {
		t.Errorf("%d open, stats %+v", n, st)
	}
	for _, c := range open {
		c.Close()
	}
}

// TestNoFamily: a family whose pool cannot be filled (as with IPv6 off)
// makes Connect fail cleanly with a reset to the client.
func TestNoFamily(t *testing.T) {
	w := newWorld(t, Options{}, netip.AddrPortFrom(loopbackAddr(t, true), 9))
	for _, side := range []Side{Host, NS} {
		p := &w.h.socks[side][1]
		p.close()
		p.gone = true
	}
	base := countFDs(t)
	w.run()
	expectReset(t, w)
	st := w.waitConns(0)
	if st.Refused != 1 {
		t.Errorf("stats %+v", st)
	}
	w.do(w.h.Refill)
	if n := countFDs(t); n != base {
		t.Errorf("%d descriptors open, %d after New", n, base)
	}
}

// exchange sends msg from the client, which then shuts down; the server
// reads it to the end and answers it reversed, then closes; the client
// reads the answer to the end.
func exchange(c, s *net.TCPConn, msg []byte) error {
	deadline := time.Now().Add(20 * time.Second)
	c.SetDeadline(deadline)
	s.SetDeadline(deadline)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	c.CloseWrite()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, msg) {
		return fmt.Errorf("server got %q, %v; want %q", got, err, msg)
	}
	ans := bytes.Clone(msg)
	for i, j := 0, len(ans)-1; i < j; i, j = i+1, j-1 {
		ans[i], ans[j] = ans[j], ans[i]
	}
	s.Write(ans)
	s.Close()
	got, err = io.ReadAll(c)
	if err != nil || !bytes.Equal(got, ans) {
		return fmt.Errorf("client got %q, %v; want %q", got, err, ans)
	}
	return nil
}

// TestManySequential runs 1000 short connections one after another: all
// close cleanly, and once the pools are topped up the process holds the
// descriptors it held after New.
func TestManySequential(t *testing.T) {
	srv := newServer(t, loopbackAddr(t, false))
	w := newWorld(t, Options{}, srv.addr)
	base := countFDs(t)
	w.run()
	for i := 0; i < 1000; i++ {
		c := w.dial(t)
		s := srv.next(t)
		err := exchange(c, s, []byte(fmt.Sprintf("message %d", i)))
		c.Close()
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	st := w.waitConns(0)
	if st.Closed != 1000 || st.Reset != 0 || st.Refused != 0 {
		t.Errorf("stats %+v", st)
	}
	w.do(w.h.Refill)
	if n := countFDs(t); n != base {
		t.Errorf("%d descriptors open, %d after New", n, base)
	}
}

// TestManyConcurrent holds 1000 spliced connections open at once, each
// having exchanged a message, then closes them all: all close cleanly,
// and the descriptors come back to what they were after New.
func TestManyConcurrent(t *testing.T) {
	const n = 1000
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < 8*n+1000 {
		t.Skipf("descriptor limit %d too low for %d connections (%v)", lim.Cur, n, err)
	}
	srv := newServer(t, loopbackAddr(t, false))
	w := newWorld(t, Options{}, srv.addr)
	base := countFDs(t)
	w.run()
	// Servers: answer the 8-byte greeting, then wait for the end.
	var swg sync.WaitGroup
	serr := make(chan error, n)
	go func() {
		for i := 0; i < n; i++ {
			s, ok := <-srv.conns
			if !ok {
				return
			}
			swg.Add(1)
			go func() {
				defer swg.Done()
				defer s.Close()
				s.SetDeadline(time.Now().Add(time.Minute))
				var b [8]byte
				if _, err := io.ReadFull(s, b[:]); err != nil {
					serr <- err
					return
				}
				s.Write(b[:])
				if rest, err := io.ReadAll(s); err != nil || len(rest) != 0 {
					serr <- fmt.Errorf("after the greeting: %d bytes, %v", len(rest), err)
				}
			}()
		}
	}()
	release := make(chan struct{})
	sem := make(chan struct{}, 64) // dials in flight
	var cwg sync.WaitGroup
	cerr := make(chan error, n)
	up := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			sem <- struct{}{}
			c, err := net.DialTimeout("tcp", w.lnAddr.String(), 20*time.Second)
			<-sem
			if err != nil {
				cerr <- err
				up <- struct{}{}
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			msg := []byte(fmt.Sprintf("%08d", i))
			var b [8]byte
			if _, err := c.Write(msg); err != nil {
				cerr <- err
			} else if _, err := io.ReadFull(c, b[:]); err != nil || !bytes.Equal(b[:], msg) {
				cerr <- fmt.Errorf("echo %q, %v; want %q", b, err, msg)
			}
			up <- struct{}{}
			<-release
		}()
	}
	for i := 0; i < n; i++ {
		select {
		case <-up:
		case <-time.After(time.Minute):
			t.Fatalf("only %d connections up after a minute", i)
		}
	}
	st, open := w.stats()
	close(release)
	cwg.Wait()
	swg.Wait()
	close(cerr)
	close(serr)
	for err := range cerr {
		t.Errorf("client: %v", err)
	}
	for err := range serr {
		t.Errorf("server: %v", err)
	}
	if open != n {
		t.Errorf("%d connections open at once, want %d (stats %+v)", open, n, st)
	}
	st = w.waitConns(0)
	if st.Closed != n || st.Reset != 0 || st.Refused != 0 {
		t.Errorf("stats %+v", st)
	}
	w.do(w.h.Refill)
	if got := countFDs(t); got != base {
		t.Errorf("%d descriptors open, %d after New", got, base)
	}
}
