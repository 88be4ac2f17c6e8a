// No allocation per connection or per event: the world is driven by hand
// from this goroutine with raw sockets, so that nothing else allocates
// while testing.AllocsPerRun counts.

package splice

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/sys"
)

// rawPeers is a client and server pair driven by hand, without the Go
// netpoller (which allocates).
type rawPeers struct {
	t     *testing.T
	w     *world
	srvLn int
	sa    unix.RawSockaddrInet4 // the spliced listener
	c, s  int
	buf   []byte
}

// drive turns the loop until done reports true, at most 20000 turns.
func (p *rawPeers) drive(what string, done func() bool) {
	for n := 0; n < 20000; n++ {
		if done() {
			return
		}
		p.w.turn(time.Millisecond)
	}
	p.t.Fatalf("%s: not done after 20000 turns", what)
}

// open connects a client to the spliced listener and waits for the
// spliced connection to reach the server.
func (p *rawPeers) open() {
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		p.t.Fatal(err)
	}
	p.c, p.s = c, -1
	if e := connect4(c, &p.sa); e != 0 && e != unix.EINPROGRESS {
		p.t.Fatal(e)
	}
	var sa unix.RawSockaddrAny
	p.drive("accept", func() bool {
		fd, e := sys.Accept4(p.srvLn, &sa)
		if e == 0 {
			p.s = fd
		}
		return p.s >= 0
	})
}

// pass writes n bytes on from and waits until they are all read on to.
func (p *rawPeers) pass(from, to, n int) {
	p.drive("write", func() bool {
		w, e := sys.Write(from, p.buf[:n])
		return e == 0 && w == n
	})
	got := 0
	p.drive("read", func() bool {
		r, e := sys.Read(to, p.buf[got:n])
		if e == 0 {
			got += r
		}
		return got == n
	})
}

// close closes both peers and waits for the spliced connection to end.
func (p *rawPeers) close() {
	unix.Close(p.c)
	unix.Close(p.s)
	p.drive("close", func() bool { return p.w.h.Conns() == 0 })
}

// newRawPeers makes a hand-driven world whose connections go to a raw
// server listener on 127.0.0.1.
func newRawPeers(t *testing.T, o Options) *rawPeers {
	addr := loopbackAddr(t, false)
	srvLn, dst := rawListen(t, addr)
	t.Cleanup(func() { unix.Close(srvLn) })
	w := newWorld(t, o, dst)
	p := &rawPeers{t: t, w: w, srvLn: srvLn, buf: make([]byte, 4096)}
	p.sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: w.lnAddr.Addr().As4()}
	setPort(&p.sa.Port, w.lnAddr.Port())
	return p
}

// TestAllocsConnection: a whole spliced connection (Connect, the connect's
// completion, 1 KiB each way, the clean close and the slot's freeing)
// allocates nothing once warm, pool refills included.
func TestAllocsConnection(t *testing.T) {
	p := newRawPeers(t, Options{PoolSize: 4, Pipes: 4})
	for i := 0; i < 10; i++ { // warm-up: slots, pools, the loop's slices
		p.open()
		p.pass(p.c, p.s, 1024)
		p.pass(p.s, p.c, 1024)
		p.close()
	}
	allocs := testing.AllocsPerRun(200, func() {
		p.open()
		p.pass(p.c, p.s, 1024)
		p.pass(p.s, p.c, 1024)
		p.close()
	})
	if allocs != 0 {
		t.Errorf("%.2f allocations per connection", allocs)
	}
	if st := p.w.h.Stats(); st.Closed != 211 || st.Reset != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestAllocsEvents: moving bytes on an established connection allocates
// nothing per event.
func TestAllocsEvents(t *testing.T) {
	p := newRawPeers(t, Options{})
	p.open()
	defer p.close()
	p.pass(p.c, p.s, 1)
	allocs := testing.AllocsPerRun(1000, func() {
		p.pass(p.c, p.s, 100)
		p.pass(p.s, p.c, 4000)
	})
	if allocs != 0 {
		t.Errorf("%.2f allocations per exchange", allocs)
	}
}
