// The Accelerator's contract: Pair once both sockets are connected and
// before any byte is spliced, Unpair before either is closed, and a Pair
// error leaves the connection on the splice path with its bytes intact.

package splice

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeAccel records the calls and checks their moment. It runs on the
// loop's goroutine, so it may read the handler.
type fakeAccel struct {
	h        *Handler
	err      error    // what Pair returns
	spliced  uint64   // bytes spliced before the connection Pair is for
	calls    []string // "pair a b", "unpair a b"
	problems []string
}

// Pair checks that a and b are one connection's sockets, both connected,
// with no byte spliced yet.
func (f *fakeAccel) Pair(a, b int) error {
	f.calls = append(f.calls, fmt.Sprintf("pair %d %d", a, b))
	if !f.isConn(a, b, false) {
		f.problems = append(f.problems, fmt.Sprintf("Pair(%d, %d): not a connecting connection's sockets", a, b))
	}
	for _, fd := range []int{a, b} {
		if _, err := unix.Getpeername(fd); err != nil {
			f.problems = append(f.problems, fmt.Sprintf("Pair: socket %d not connected: %v", fd, err))
		}
	}
	if e, err := unix.GetsockoptInt(b, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || e != 0 {
		f.problems = append(f.problems, fmt.Sprintf("Pair: SO_ERROR %d, %v", e, err))
	}
	if st := f.h.stats; st.BytesToDst+st.BytesFromDst != f.spliced {
		f.problems = append(f.problems, fmt.Sprintf("Pair after %d bytes spliced", st.BytesToDst+st.BytesFromDst-f.spliced))
	}
	return f.err
}

// Unpair checks that a and b are still open and still the connection's.
func (f *fakeAccel) Unpair(a, b int) {
	f.calls = append(f.calls, fmt.Sprintf("unpair %d %d", a, b))
	if !f.isConn(a, b, true) {
		f.problems = append(f.problems, fmt.Sprintf("Unpair(%d, %d): not a paired connection's sockets", a, b))
	}
	for _, fd := range []int{a, b} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			f.problems = append(f.problems, fmt.Sprintf("Unpair: socket %d already closed: %v", fd, err))
		}
	}
}

// isConn reports whether a, b are the sockets of an open connection of
// the handler (paired or not, as asked).
func (f *fakeAccel) isConn(a, b int, paired bool) bool {
	for i := range f.h.conns {
		c := &f.h.conns[i]
		if c.flags&fUsed != 0 && c.flags&fClosed == 0 && int(c.sock[0]) == a && int(c.sock[1]) == b {
			return (c.flags&fPaired != 0) == paired
		}
	}
	return false
}

// TestAccelerator runs connections with an Accelerator that accepts (and,
// a fake, forwards nothing: the splice path still moves what reaches the
// sockets) and with one that refuses: bytes intact both ways, calls at
// the right moments, Unpair after a clean close and after a reset alike.
func TestAccelerator(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "pair", true: "refused"}[refuse], func(t *testing.T) {
			srv := newServer(t, loopbackAddr(t, false))
			f := &fakeAccel{}
			if refuse {
				f.err = errors.New("no sockmap here")
			}
			w := newWorld(t, Options{Accel: f}, srv.addr)
			f.h = w.h
			w.run()

			// Bytes sent before the connect completes arrive first.
			c := w.dial(t)
			defer c.Close()
			early := []byte("early bytes")
			if _, err := c.Write(early); err != nil {
				t.Fatal(err)
			}
			s := srv.next(t)
			defer s.Close()
			s.SetReadDeadline(time.Now().Add(10 * time.Second))
			b := make([]byte, len(early))
			if _, err := io.ReadFull(s, b); err != nil || string(b) != string(early) {
				t.Fatalf("early bytes: %q, %v", b, err)
			}
			streamBoth(t, c, s, 8<<20)
			w.waitConns(0)

			// A reset one.
			w.do(func() { f.spliced = w.h.stats.BytesToDst + w.h.stats.BytesFromDst })
			c2 := w.dial(t)
			defer c2.Close()
			s2 := srv.next(t)
			defer s2.Close()
			establish(t, c2, s2)
			c2.SetLinger(0)
			c2.Close()
			if _, err := readAll(s2, 10*time.Second); !isReset(err) {
				t.Fatalf("server read %v, want a reset", err)
			}
			st := w.waitConns(0)

			var calls, problems []string
			w.do(func() { calls, problems = f.calls, f.problems })
			for _, p := range problems {
				t.Error(p)
			}
			want := 4
			if refuse {
				want = 2
			}
			if len(calls) != want {
				t.Errorf("calls %q, want %d", calls, want)
			}
			for k, call := range calls {
				verb := "pair"
				if !refuse && k%2 == 1 {
					verb = "unpair"
				}
				var a, b int
				if _, err := fmt.Sscanf(call, verb+" %d %d", &a, &b); err != nil {
					t.Errorf("call %d: %q, want %s", k, call, verb)
				}
			}
			if !refuse && len(calls) == 4 && (calls[0][4:] != calls[1][6:] || calls[2][4:] != calls[3][6:]) {
				t.Errorf("Unpair's sockets differ from Pair's: %q", calls)
			}
			wantPairs, wantErrs := uint64(2), uint64(0)
			if refuse {
				wantPairs, wantErrs = 0, 2
			}
			if st.Pairs != wantPairs || st.PairErrors != wantErrs || st.Closed != 1 || st.Reset != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}
