// Byte streams for the tests: deterministic pseudo-random data written
// and read with SHA-256 on both ends, and the CPU counters of /proc.

package sockmap

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// result is what one side of a stream saw: the hash of the bytes, their
// count, the error that ended the read (nil: a clean end of stream).
type result struct {
	sum [32]byte
	n   int64
	err error
}

// sendStream writes n pseudo-random bytes (seeded by seed) to c in writes
// of chunk bytes, then shuts c down for writing at once (its FIN right
// behind the data) unless noFIN. Returns the hash of what was written, or
// the error of a write.
func sendStream(c *net.TCPConn, n int64, chunk int, seed uint64, noFIN bool) result {
	c.SetWriteDeadline(time.Now().Add(ioTimeout))
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	h := sha256.New()
	buf := make([]byte, chunk)
	var sent int64
	for sent < n {
		b := buf
		if rem := n - sent; rem < int64(len(b)) {
			b = b[:rem]
		}
		r.Read(b)
		h.Write(b)
		if _, err := c.Write(b); err != nil {
			return result{n: sent, err: fmt.Errorf("write after %d bytes: %w", sent, err)}
		}
		sent += int64(len(b))
	}
	var res result
	if !noFIN {
		res.err = c.CloseWrite()
	}
	h.Sum(res.sum[:0])
	res.n = sent
	return res
}

// recvStream reads c to its end of stream (ioTimeout at most), pausing
// pause after every read of chunk bytes (0: none, a fast reader). Returns
// the hash and count of what it read, and the error other than the end.
func recvStream(c *net.TCPConn, chunk int, pause time.Duration) result {
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	h := sha256.New()
	buf := make([]byte, chunk)
	var res result
	for {
		k, err := c.Read(buf)
		h.Write(buf[:k])
		res.n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			res.err = fmt.Errorf("read after %d bytes: %w", res.n, err)
			break
		}
		if pause > 0 {
			time.Sleep(pause)
		}
	}
	h.Sum(res.sum[:0])
	return res
}

// checkStream fails t unless what was received is what was sent.
func checkStream(t testing.TB, what string, sent, got result) {
	t.Helper()
	if sent.err != nil {
		t.Errorf("%s: sender: %v", what, sent.err)
	}
	if got.err != nil {
		t.Errorf("%s: receiver: %v", what, got.err)
	}
	if got.n != sent.n || got.sum != sent.sum {
		t.Errorf("%s: received %d bytes (SHA-256 %x), sent %d (%x)", what, got.n, got.sum[:8], sent.n, sent.sum[:8])
	}
}

// taskCPU returns the user and system time thread tid of this process used
// (/proc/self/task/TID/stat, in clock ticks of 10 ms).
func taskCPU(tid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}

// systemCPU returns the busy time of all CPUs (/proc/stat: everything but
// idle and iowait), softirqs and kernel workers included.
func systemCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var busy int64
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseInt(f, 10, 64)
		if i != 3 && i != 4 && i < 8 { // idle, iowait; guest counted in user
			busy += v
		}
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

// newHash returns a SHA-256 hash.
func newHash() hash.Hash { return sha256.New() }

// isReset reports whether err is a connection reset.
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
