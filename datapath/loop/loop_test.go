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
