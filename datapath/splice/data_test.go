// Bytes through spliced connections: integrity both ways at once, in both
// families, half-closes, and hang-ups with bytes still waiting.

package splice

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// sendStream writes n bytes of a stream seeded by seed to c, then shuts c
// down for writing. The stream is a random 1 MiB block read at a moving
// offset, each 256 KiB chunk starting with its index, so that a lost,
// doubled or reordered chunk changes the hash. Returns the SHA-256 of what
// it wrote.
func sendStream(c *net.TCPConn, n int, seed uint64) ([32]byte, error) {
	block := make([]byte, 1<<20)
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	rand.NewChaCha8(key).Read(block)
	buf := make([]byte, 256<<10)
	h := sha256.New()
	for j, sent := 0, 0; sent < n; j++ {
		off := (j * 4099) % (len(block) - len(buf))
		copy(buf, block[off:])
		binary.LittleEndian.PutUint64(buf, uint64(j))
		m := min(len(buf), n-sent)
		h.Write(buf[:m])
		if _, err := c.Write(buf[:m]); err != nil {
			return [32]byte{}, fmt.Errorf("write after %d bytes: %w", sent, err)
		}
		sent += m
	}
	if err := c.CloseWrite(); err != nil {
		return [32]byte{}, fmt.Errorf("shutdown: %w", err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}

// recvStream reads c to its end. Returns the SHA-256 and count of what it
// read.
func recvStream(c *net.TCPConn) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, n, err
}

// streamBoth sends n bytes each way between a and b at once and checks
// that each end received exactly what the other sent, and saw its end.
func streamBoth(t *testing.T, a, b *net.TCPConn, n int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	var sentA, sentB, gotA, gotB result
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); sentA.sum, sentA.err = sendStream(a, n, 1) }()
	go func() { defer wg.Done(); sentB.sum, sentB.err = sendStream(b, n, 2) }()
	go func() { defer wg.Done(); gotB.sum, gotB.n, gotB.err = recvStream(b) }()
	go func() { defer wg.Done(); gotA.sum, gotA.n, gotA.err = recvStream(a) }()
	wg.Wait()
	for _, r := range []struct {
		what string
		err  error
	}{{"client send", sentA.err}, {"server send", sentB.err}, {"server receive", gotB.err}, {"client receive", gotA.err}} {
		if r.err != nil {
			t.Fatalf("%s: %v", r.what, r.err)
		}
	}
	if gotB.n != int64(n) || gotB.sum != sentA.sum {
		t.Errorf("client to server: %d bytes, hash %x; sent %d, hash %x", gotB.n, gotB.sum[:8], n, sentA.sum[:8])
	}
	if gotA.n != int64(n) || gotA.sum != sentB.sum {
		t.Errorf("server to client: %d bytes, hash %x; sent %d, hash %x", gotA.n, gotA.sum[:8], n, sentB.sum[:8])
	}
}

// TestIntegrity moves 256 MiB each way at once through one spliced
// connection, IPv4 and IPv6, compares SHA-256 at both ends, and checks the
// clean close and the counters.
func TestIntegrity(t *testing.T) {
	const n = 256 << 20
	for _, v6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "IPv4", true: "IPv6"}[v6], func(t *testing.T) {
			addr := loopbackAddr(t, v6)
			srv := newServer(t, addr)
			w := newWorld(t, Options{}, srv.addr)
			w.run()
			c := w.dial(t)
			defer c.Close()
			s := srv.next(t)
			defer s.Close()
			start := time.Now()
			streamBoth(t, c, s, n)
			t.Logf("%d MiB each way in %v (pipes of %d bytes)", n>>20, time.Since(start), w.h.PipeSize())
			st := w.waitConns(0)
			if st.BytesToDst != n || st.BytesFromDst != n || st.Closed != 1 || st.Reset != 0 || st.Connected != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestHalfClose shuts one end down for writing while the other still
// sends, in both orders: the first writer's peer sees all its bytes and
// then the end of the stream, the other direction goes on, and the
// connection closes without a reset.
func TestHalfClose(t *testing.T) {
	for _, clientFirst := range []bool{true, false} {
		t.Run(map[bool]string{true: "client-first", false: "server-first"}[clientFirst], func(t *testing.T) {
			addr := loopbackAddr(t, false)
			srv := newServer(t, addr)
			w := newWorld(t, Options{}, srv.addr)
			w.run()
			c := w.dial(t)
			defer c.Close()
			s := srv.next(t)
			defer s.Close()
			first, second := c, s
			if !clientFirst {
				first, second = s, c
			}
			one := bytes.Repeat([]byte("first "), 200000)
			two := bytes.Repeat([]byte("second "), 300000)
			if _, err := first.Write(one); err != nil {
				t.Fatal(err)
			}
			if err := first.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := readAll(second, 10*time.Second)
			if err != nil || !bytes.Equal(got, one) {
				t.Fatalf("before the end of stream: %d bytes (want %d), %v", len(got), len(one), err)
			}
			// The half-closed end still receives.
			if _, err := second.Write(two); err != nil {
				t.Fatal(err)
			}
			second.Close()
			got, err = readAll(first, 10*time.Second)
			if err != nil || !bytes.Equal(got, two) {
				t.Fatalf("after the half-close: %d bytes (want %d), %v", len(got), len(two), err)
			}
			st := w.waitConns(0)
			if st.Closed != 1 || st.Reset != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestHangupWithBytesWaiting: both ends shut down for writing at once,
// with more bytes in flight than the buffers and the pipe hold, so that a
// socket hangs up (its peer's FIN after our shutdown) while its bytes
// still wait behind a full pipe: that is a half-close, not a reset, and
// every byte must arrive.
func TestHangupWithBytesWaiting(t *testing.T) {
	addr := loopbackAddr(t, false)
	srv := newServer(t, addr)
	w := newWorld(t, Options{}, srv.addr)
	w.run()
	c := w.dial(t)
	defer c.Close()
	s := srv.next(t)
	defer s.Close()
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	const n = 48 << 20
	done := make(chan error, 1)
	var sent [32]byte
	go func() {
		var err error
		c.SetDeadline(time.Now().Add(time.Minute))
		sent, err = sendStream(c, n, 3)
		done <- err
	}()
	// Let everything fill up before the server reads a byte.
	time.Sleep(300 * time.Millisecond)
	s.SetDeadline(time.Now().Add(time.Minute))
	got, count, err := recvStream(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if count != n || got != sent {
		t.Fatalf("%d bytes, hash %x; sent %d, hash %x", count, got[:8], n, sent[:8])
	}
	if b, err := readAll(c, 10*time.Second); err != nil || len(b) != 0 {
		t.Fatalf("client: %d bytes, %v; want the end of stream", len(b), err)
	}
	st := w.waitConns(0)
	if st.Closed != 1 || st.Reset != 0 {
		t.Errorf("stats %+v", st)
	}
}
