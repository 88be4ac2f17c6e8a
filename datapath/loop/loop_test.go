package loop

import (
	"math/rand/v2"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestTimersOrder(t *testing.T) {
	var tm Timers
	tm.init(100)
	var fired []int32
	cb := func(id int32, now int64) { fired = append(fired, id) }
	r := rand.New(rand.NewPCG(3, 4))
	when := map[int32]int64{}
	for i := int32(0); i < 100; i++ {
		w := int64(r.IntN(1000))
		tm.Set(i, w, cb)
		when[i] = w
	}
	for i := int32(0); i < 100; i += 3 {
		tm.Cancel(i)
		delete(when, i)
	}
	for i := int32(1); i < 100; i += 7 {
		if _, ok := when[i]; ok {
			tm.Set(i, 500, cb)
			when[i] = 500
		}
	}
	tm.fire(2000)
	if len(fired) != len(when) {
		t.Fatalf("fired %d, want %d", len(fired), len(when))
	}
	for j := 1; j < len(fired); j++ {
		if when[fired[j-1]] > when[fired[j]] {
			t.Fatalf("out of order at %d", j)
		}
	}
}

func TestLoopDispatch(t *testing.T) {
	l, err := New(4)
	if err != nil {
		t.Fatal(err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	var got Ref
	l.Handle(7, func(r Ref, ev uint32) { got = r; l.Stop() })
	want := MakeRef(7, p[0], 12345)
	if err := l.Add(p[0], unix.EPOLLIN, want); err != nil {
		t.Fatal(err)
	}
	unix.Write(p[1], []byte{1})
	if err := l.Turn(time.Second); err != nil {
		t.Fatal(err)
	}
	if got != want || got.FD() != p[0] || got.Index() != 12345 || got.Kind() != 7 {
		t.Fatalf("got ref %x, want %x", got, want)
	}
	fired := false
	l.Timers().Set(1, l.Now()+int64(20*time.Millisecond), func(int32, int64) { fired = true })
	start := time.Now()
	for !fired && time.Since(start) < time.Second {
		l.Turn(-1)
	}
	if !fired {
		t.Fatal("timer did not fire")
	}
}

// TestBusyPoll: with busy polling on, an event that is there is handled at
// once (caught by the spin, no blocking wait), a timer still fires when
// nothing comes, and waits much longer than the spin make the loop stop
// spinning (the time spent spinning stops growing).
func TestBusyPoll(t *testing.T) {
	l, err := New(4)
	if err != nil {
		t.Fatal(err)
	}
	l.SetBusyPoll(200 * time.Microsecond)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	got := 0
	buf := make([]byte, 16)
	l.Handle(7, func(r Ref, ev uint32) {
		n, _ := unix.Read(p[0], buf)
		got += n
	})
	if err := l.Add(p[0], unix.EPOLLIN, MakeRef(7, p[0], 0)); err != nil {
		t.Fatal(err)
	}
	unix.Write(p[1], []byte{1, 2, 3})
	if err := l.Turn(-1); err != nil {
		t.Fatal(err)
	}
	if got != 3 || l.Spins.Caught != 1 || l.Spins.Missed != 0 {
		t.Fatalf("read %d bytes, spins %+v: want 3 bytes caught by the first spin", got, l.Spins)
	}

	// Nothing but timers, 20 ms apart: each wait is 100 times the spin.
	wait := func() {
		t.Helper()
		fired := false
		l.Timers().Set(1, l.Now()+int64(20*time.Millisecond), func(int32, int64) { fired = true })
		for k := 0; k < 100 && !fired; k++ {
			if err := l.Turn(-1); err != nil {
				t.Fatal(err)
			}
		}
		if !fired {
			t.Fatal("timer did not fire while busy polling")
		}
	}
	for k := 0; k < 10; k++ {
		wait()
	}
	spun := l.Spins.SpinNs
	for k := 0; k < 3; k++ {
		wait()
	}
	if l.Spins.SpinNs != spun {
		t.Fatalf("still spinning after 10 waits of 100 times the spin: %d ns more", l.Spins.SpinNs-spun)
	}
	if l.Spins.Missed < 10 {
		t.Fatalf("spins %+v: want the timer waits counted as missed", l.Spins)
	}
}
