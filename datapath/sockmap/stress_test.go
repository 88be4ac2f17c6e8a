// The stress test of the accelerator under CPU load (skipped unless
// -sockmap.stress is given): the transfer that once received bytes twice
// in CI (64 MiB each way at once through the splice engine, the reply
// direction checked byte for byte), run many times while busy processes
// this test starts compete for the two CPUs, every received stream
// compared with what was sent and, on a difference, located (where the
// first wrong byte is, and whether it repeats earlier bytes).

package sockmap

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

var (
	stressRuns = flag.Int("sockmap.stress", 0, "TestStress: transfers to run (0: skip the test)")
	stressFor  = flag.Duration("sockmap.stresstime", 20*time.Minute, "TestStress: stop starting transfers after this long")
	stressLoad = flag.Int("sockmap.load", 2, "TestStress: busy processes competing for the CPUs")
	stressSize = flag.Int("sockmap.size", 64<<20, "TestStress: bytes each way per transfer")
	stressFam  = flag.String("sockmap.family", "both", "TestStress: 4, 6 or both (alternating)")
	noTrim     = flag.Bool("sockmap.notrim", false, "TestStress: load the program without its cut of repeated bytes (counting them only), to show the duplicates it prevents")
)

// spinEnv names the environment variable that turns the test binary into
// a busy process (TestStressSpin): its value is how long it spins.
const spinEnv = "GOPASST_SOCKMAP_SPIN"

// TestStressSpin is the busy process TestStress starts (the test binary
// again, with spinEnv set): it spins on one CPU for the duration spinEnv
// says (at most 30 minutes), then exits. Without spinEnv it does nothing.
func TestStressSpin(t *testing.T) {
	v := os.Getenv(spinEnv)
	if v == "" {
		t.Skip("only as TestStress's busy process")
	}
	d, err := time.ParseDuration(v)
	if err != nil || d > 30*time.Minute {
		t.Fatalf("%s=%q: want a duration up to 30m", spinEnv, v)
	}
	end := time.Now().Add(d)
	x := uint64(1)
	for time.Now().Before(end) {
		for i := 0; i < 1<<16; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	if x == 0 {
		t.Log(x)
	}
}

// startLoad starts n busy processes (TestStressSpin) that spin for d at
// most, and ends them, by their PIDs, at t's cleanup.
func startLoad(t *testing.T, n int, d time.Duration) {
	for i := 0; i < n; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStressSpin$")
		cmd.Env = append(os.Environ(), spinEnv+"="+d.String())
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting a busy process: %v", err)
		}
		pid := cmd.Process.Pid
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			t.Logf("busy process %d ended", pid)
		})
	}
}

// TestStress runs -sockmap.stress transfers (at most -sockmap.stresstime
// long in all) of -sockmap.size bytes each way at once through the splice
// engine with the accelerator, over IPv4, IPv6 or both alternately, with
// -sockmap.load busy processes running, and fails on the first transfer
// that received other bytes than were sent, saying where they differ.
func TestStress(t *testing.T) {
	if *stressRuns <= 0 {
		t.Skip("run with -sockmap.stress N (and -sockmap.load, -sockmap.stresstime, -sockmap.size, -sockmap.family)")
	}
	if *noTrim {
		trimOverlaps = false // before the process's first Probe
	}
	x := requireAccel(t)
	if *noTrim && trimOverlaps {
		t.Fatal("-sockmap.notrim: the accelerator was probed already (run TestStress alone)")
	}
	startLoad(t, *stressLoad, *stressFor+time.Minute)
	n := *stressSize
	// The two streams, generated once: seeds 1 (client to server) and 2.
	want := [2][]byte{streamBytes(n, 1), streamBytes(n, 2)}
	// What each receiver read, kept whole (with room for extra bytes).
	got := [2][]byte{make([]byte, n+8<<20), make([]byte, n+8<<20)}
	engines := map[bool]*engine{}
	// The counts of the last pair Unpair took out (set on the loop's
	// thread, read after waitConns).
	var lastFlows [2]flowState
	var lastConsumed [2]uint64
	var trims, trimmed uint64 // over all runs
	x.onUnpair = func(fs [2]flowState, consumed [2]uint64) {
		lastFlows, lastConsumed = fs, consumed
		for _, f := range fs {
			trims += uint64(f.Trims)
			trimmed += f.Trimmed
		}
	}
	defer func() { x.onUnpair = nil }()
	start := time.Now()
	bad, runs := 0, 0
	for runs < *stressRuns && time.Since(start) < *stressFor {
		v6 := *stressFam == "6" || (*stressFam == "both" && runs%2 == 1)
		e := engines[v6]
		if e == nil {
			e = newEngineOn(t, x, v6)
			engines[v6] = e
		}
		before := e.accelStats()
		c, s := e.dial(t)
		sent := make(chan error, 2)
		go func() { sent <- sendAll(c, want[0]) }()
		go func() { sent <- sendAll(s, want[1]) }()
		atServer := make(chan recvd, 1)
		go func() { atServer <- recvAll(s, got[0]) }()
		atClient := recvAll(c, got[1])
		up := <-atServer
		e1, e2 := <-sent, <-sent
		c.Close()
		s.Close()
		st := e.waitConns()
		d := e.accelStats()
		runs++
		fam := "IPv4"
		if v6 {
			fam = "IPv6"
		}
		ok := true
		for k, r := range [2]recvd{up, atClient} {
			what := [2]string{"client to server", "server to client"}[k]
			if r.err != nil || e1 != nil || e2 != nil {
				t.Errorf("run %d (%s) %s: receiver %v, senders %v, %v", runs, fam, what, r.err, e1, e2)
				ok = false
			}
			if msg := compareStream(want[k], got[k][:min(r.n, len(got[k]))], r.n); msg != "" {
				t.Errorf("run %d (%s) %s: %s (directions given back in this run: %d)", runs, fam, what, msg, d.Returned-before.Returned)
				ok = false
			}
		}
		if !ok {
			bad++
			t.Logf("engine stats after run %d: %+v", runs, st)
			for k, what := range [2]string{"client to server (the accepted socket's)", "server to client (the connected socket's)"} {
				f := lastFlows[k]
				t.Logf("%s: redirected %d, passed %d, consumed by Read %d, flags %#x; redirected + passed %d; skbs repeating earlier bytes %d, %d bytes repeated", what, f.Sent, f.Passed, lastConsumed[k], f.Flags, f.Sent+f.Passed, f.Trims, f.Trimmed)
			}
			break
		}
		if runs%50 == 0 {
			t.Logf("%d transfers, %v, given back so far: %d, skbs repeating bytes %d (%d bytes)", runs, time.Since(start).Round(time.Second), d.Returned, trims, trimmed)
		}
	}
	t.Logf("%d transfers of %d bytes each way in %v with %d busy processes, %d bad; %d skbs repeated earlier bytes, %d bytes in all (cut: %v)", runs, n, time.Since(start).Round(time.Second), *stressLoad, bad, trims, trimmed, trimOverlaps)
	checkEmpty(t, x)
}

// streamBytes returns the n bytes sendStream would write with seed.
func streamBytes(n int, seed uint64) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	r.Read(b)
	return b
}

// sendAll writes b to c in writes of 64 KiB, then shuts c down for
// writing. Returns the error of a write or of the shutdown.
func sendAll(c *net.TCPConn, b []byte) error {
	c.SetWriteDeadline(time.Now().Add(4 * ioTimeout))
	for off := 0; off < len(b); off += 64 << 10 {
		if _, err := c.Write(b[off:min(off+64<<10, len(b))]); err != nil {
			return fmt.Errorf("write after %d bytes: %w", off, err)
		}
	}
	return c.CloseWrite()
}

// recvd is what recvAll read: the count (beyond buf's size too) and the
// error other than the end of stream.
type recvd struct {
	n   int
	err error
}

// recvAll reads c to its end of stream into buf (counting, not keeping,
// what does not fit).
func recvAll(c *net.TCPConn, buf []byte) recvd {
	c.SetReadDeadline(time.Now().Add(4 * ioTimeout))
	var r recvd
	var spill [64 << 10]byte
	for {
		dst := spill[:]
		if r.n < len(buf) {
			dst = buf[r.n:min(r.n+256<<10, len(buf))]
		}
		k, err := c.Read(dst)
		r.n += k
		if err == io.EOF {
			return r
		}
		if err != nil {
			r.err = fmt.Errorf("read after %d bytes: %w", r.n, err)
			return r
		}
	}
}

// compareStream returns "" if got (n bytes received, got holding the
// first of them) is want, or where they differ: the first wrong byte and,
// if the bytes from there repeat earlier ones of the stream, from which
// offset and how many, and whether the stream goes on right after the
// repetition.
func compareStream(want, got []byte, n int) string {
	if n == len(want) && bytes.Equal(want, got) {
		return ""
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	msg := fmt.Sprintf("received %d bytes, sent %d (%+d); first difference at %d", n, len(want), n-len(want), i)
	if i >= len(got) || i >= len(want) {
		return msg
	}
	// Where in the stream do the received bytes from i come from?
	probe := got[i:min(i+4096, len(got))]
	if j := bytes.Index(want, probe); j >= 0 {
		msg += fmt.Sprintf("; the bytes there are the stream's from %d (%+d)", j, j-i)
		if j < i {
			// A repetition of i-j bytes: does the stream resume at i
			// after it?
			rep := i - j
			if i+rep <= len(got) && bytes.Equal(got[i:i+rep], want[j:i]) {
				msg += fmt.Sprintf(", repeated whole (%d bytes = %s)", rep, factors(rep))
				if i+rep < len(got) {
					rest := got[i+rep:]
					if bytes.Equal(rest, want[i:min(len(want), i+len(rest))]) {
						msg += ", and the rest follows intact"
					} else {
						msg += ", and more differs after it"
					}
				}
			}
		}
	} else {
		msg += "; the bytes there are nowhere in the stream"
	}
	return msg
}

// factors says n as multiples of the loopback MSS of IPv4 and IPv6 (with
// timestamps), when it is one.
func factors(n int) string {
	s := strconv.Itoa(n)
	for _, mss := range []int{65484, 65464, 65496, 65476} {
		if n%mss == 0 {
			s += fmt.Sprintf(", %d x %d", n/mss, mss)
		}
	}
	return s
}
