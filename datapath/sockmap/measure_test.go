// The measurement beside splice, in one run: throughput (64 KiB writes),
// 1-byte request/response transactions per second, and CPU per GB, for
// plain loopback, the splice engine alone, and the splice engine with the
// accelerator. It runs only when asked:
//
//	go test ./datapath/sockmap -run Measure -v -sockmap.measure 3s
//
// Client and server are raw blocking sockets driven from locked OS
// threads (as netperf's are processes), so that the Go scheduler does not
// sit in every round trip.

package sockmap

import (
	"flag"
	"net"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var measureReps = flag.Int("sockmap.reps", 3, "TestMeasure: repetitions of each row")

var noTput = flag.Bool("sockmap.nothroughput", false, "RR only")

var measureFor = flag.Duration("sockmap.measure", 0, "run TestMeasure, each figure over this long")

// rawConn returns a blocking descriptor for c's socket (a dup; c closed).
func rawConn(t testing.TB, c *net.TCPConn) int {
	t.Helper()
	f, err := c.File() // a blocking duplicate
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// pairFor returns a connected client and server descriptor pair, through
// the engine (e.dial) or directly to the server (plain).
func pairFor(t testing.TB, e *engine, plain bool) (c, s int) {
	t.Helper()
	if !plain {
		cc, ss := e.dial(t)
		return rawConn(t, cc), rawConn(t, ss)
	}
	cc, err := net.DialTimeout("tcp4", e.srv.Addr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := e.srv.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return rawConn(t, cc.(*net.TCPConn)), rawConn(t, ss.(*net.TCPConn))
}

// onThread runs f on a new locked OS thread and returns a channel closed
// when it returns.
func onThread(f func()) chan struct{} {
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(done)
		f()
	}()
	return done
}

// figures is one row of the table.
type figures struct {
	gbits     float64 // throughput, Gbit/s
	sysPerGB  float64 // all CPUs' busy seconds per GB moved
	loopPerGB float64 // the translator's thread, seconds per GB
	rr        float64 // transactions/s
	loopPerRR float64 // the translator's thread, µs per transaction
	sysPerRR  float64 // all CPUs, µs per transaction
}

// throughput sends 64 KiB writes from c to s for d; returns the figures.
func throughput(t testing.TB, e *engine, c, s int, d time.Duration) (f figures) {
	var got int64
	srvDone := onThread(func() {
		buf := make([]byte, 256<<10)
		for {
			n, err := unix.Read(s, buf)
			if n <= 0 || err != nil {
				return
			}
			got += int64(n)
		}
	})
	sys0, loop0 := systemCPU(), e.threadCPU()
	start := time.Now()
	<-onThread(func() {
		buf := make([]byte, 64<<10)
		for time.Since(start) < d {
			if _, err := unix.Write(c, buf); err != nil {
				t.Errorf("write: %v", err)
				return
			}
		}
		unix.Shutdown(c, unix.SHUT_WR)
	})
	<-srvDone
	el := time.Since(start).Seconds()
	gb := float64(got) / 1e9
	f.gbits = gb * 8 / el
	f.sysPerGB = (systemCPU() - sys0).Seconds() / gb
	f.loopPerGB = (e.threadCPU() - loop0).Seconds() / gb
	return f
}

// rr runs 1-byte request/response transactions between c and s for d.
func rr(t testing.TB, e *engine, f *figures, c, s int, d time.Duration) {
	srvDone := onThread(func() {
		b := make([]byte, 1)
		for {
			if n, _ := unix.Read(s, b); n <= 0 {
				return
			}
			unix.Write(s, b)
		}
	})
	var n int
	sys0, loop0 := systemCPU(), e.threadCPU()
	start := time.Now()
	<-onThread(func() {
		b := make([]byte, 1)
		for ; n%256 != 0 || time.Since(start) < d; n++ {
			if _, err := unix.Write(c, b); err != nil {
				t.Errorf("write: %v", err)
				return
			}
			if k, err := unix.Read(c, b); k != 1 {
				t.Errorf("read: %d, %v", k, err)
				return
			}
		}
		unix.Shutdown(c, unix.SHUT_WR)
	})
	<-srvDone
	el := time.Since(start).Seconds()
	f.rr = float64(n) / el
	f.loopPerRR = (e.threadCPU() - loop0).Seconds() * 1e6 / float64(n)
	f.sysPerRR = (systemCPU() - sys0).Seconds() * 1e6 / float64(n)
}

// TestMeasure prints the table: plain loopback, splice alone, splice with
// the accelerator, and the accelerator with a budget no transfer reaches
// (its redirect path alone, for comparison: not a configuration to run),
// each the same client and server, the rows interleaved -sockmap.reps
// times and the median of each figure printed.
func TestMeasure(t *testing.T) {
	if *measureFor <= 0 {
		t.Skip("a measurement: run with -sockmap.measure DURATION")
	}
	x := requireAccel(t)
	unbounded, err := newAccel(Options{MaxPairs: 16, MaxQueued: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer unbounded.Close()
	d := *measureFor
	rows := []struct {
		name  string
		x     *Accel
		plain bool
	}{{"loopback", nil, true}, {"splice", nil, false}, {"splice+sockmap", x, false}, {"(no budget)", unbounded, false}}
	all := make([][]figures, len(rows))
	given := make([]uint64, len(rows))
	for rep := 0; rep < *measureReps; rep++ {
		for i, r := range rows {
			e := newEngine(t, r.x)
			before := e.accelStats()
			var f figures
			if !*noTput {
				c, s := pairFor(t, e, r.plain)
				f = throughput(t, e, c, s, d)
			}
			c, s := pairFor(t, e, r.plain)
			rr(t, e, &f, c, s, d)
			all[i] = append(all[i], f)
			given[i] += e.accelStats().Returned - before.Returned
			e.close()
		}
	}
	t.Logf("median of %d, %v each:", *measureReps, d)
	t.Logf("%-15s %8s %10s %10s %10s %10s %11s %8s", "path", "Gbit/s", "CPU s/GB", "loop s/GB", "TCP_RR/s", "CPU µs/tx", "loop µs/tx", "handed")
	for i, r := range rows {
		m := func(get func(figures) float64) float64 {
			v := make([]float64, len(all[i]))
			for k, f := range all[i] {
				v[k] = get(f)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		t.Logf("%-15s %8.2f %10.3f %10.3f %10.0f %10.2f %11.2f %8d", r.name,
			m(func(f figures) float64 { return f.gbits }), m(func(f figures) float64 { return f.sysPerGB }),
			m(func(f figures) float64 { return f.loopPerGB }), m(func(f figures) float64 { return f.rr }),
			m(func(f figures) float64 { return f.sysPerRR }), m(func(f figures) float64 { return f.loopPerRR }), given[i])
	}
}
