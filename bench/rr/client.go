// The client side of the request/response tests: tcp_rr, tcp_crr, udp_rr.

package rr

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// Test names, as neper's binaries are called.
const (
	TCPRR  = "tcp_rr"
	TCPCRR = "tcp_crr"
	UDPRR  = "udp_rr"
)

// maxSamples bounds the latency samples kept for percentiles (32 MiB);
// beyond it, min, max, mean and the count still see every transaction.
const maxSamples = 4 << 20

// ClientOptions describe one client run.
type ClientOptions struct {
	Test         string        // TCPRR, TCPCRR or UDPRR
	Host         string        // literal address, IPv6 may carry %zone
	Port         int           // server port (TCP and UDP)
	Duration     time.Duration // stop after this long
	Count        int64         // stop after this many transactions (0: no limit)
	RequestSize  int           // bytes per request (default 1)
	ResponseSize int           // bytes per response (default 1)
	Timeout      time.Duration // per connect, read or write (default 1 s)
}

// Result is what a client run measured. Latencies are per transaction.
type Result struct {
	Test         string
	Transactions int64
	Lost         int64 // udp_rr requests that got no response in time
	Seconds      float64
	Throughput   float64 // transactions per second
	Min, Max     time.Duration
	Mean, Stddev time.Duration
	P50, P90     time.Duration
	P99, P999    time.Duration
}

// stats accumulates transaction latencies.
type stats struct {
	n          int64
	sum, sum2  float64 // nanoseconds
	min, max   time.Duration
	samples    []time.Duration
	sampleFull bool
}

// add records one transaction that took d.
func (s *stats) add(d time.Duration) {
	if s.n == 0 || d < s.min {
		s.min = d
	}
	if d > s.max {
		s.max = d
	}
	s.n++
	f := float64(d)
	s.sum += f
	s.sum2 += f * f
	if len(s.samples) < maxSamples {
		s.samples = append(s.samples, d)
	} else {
		s.sampleFull = true
	}
}

// result turns the accumulated figures into a Result for test over elapsed.
func (s *stats) result(test string, elapsed time.Duration, lost int64) Result {
	r := Result{Test: test, Transactions: s.n, Lost: lost, Seconds: elapsed.Seconds()}
	if s.n == 0 {
		return r
	}
	if r.Seconds > 0 {
		r.Throughput = float64(s.n) / r.Seconds
	}
	r.Min, r.Max = s.min, s.max
	mean := s.sum / float64(s.n)
	r.Mean = time.Duration(mean)
	if v := s.sum2/float64(s.n) - mean*mean; v > 0 {
		r.Stddev = time.Duration(math.Sqrt(v))
	}
	sort.Slice(s.samples, func(i, j int) bool { return s.samples[i] < s.samples[j] })
	r.P50 = Percentile(s.samples, 50)
	r.P90 = Percentile(s.samples, 90)
	r.P99 = Percentile(s.samples, 99)
	r.P999 = Percentile(s.samples, 99.9)
	return r
}

// Percentile returns the p-th percentile (nearest rank) of sorted, or 0
// when sorted is empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

// sockaddr resolves a literal host (IPv6 with optional %zone) and port into
// a socket address and its family.
func sockaddr(host string, port int) (unix.Sockaddr, int, error) {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return nil, 0, fmt.Errorf("host %q: want a literal address: %w", host, err)
	}
	if a.Is4() || a.Is4In6() {
		return &unix.SockaddrInet4{Port: port, Addr: a.Unmap().As4()}, unix.AF_INET, nil
	}
	sa := &unix.SockaddrInet6{Port: port, Addr: a.As16()}
	if z := a.Zone(); z != "" {
		ifi, err := net.InterfaceByName(z)
		if err != nil {
			return nil, 0, fmt.Errorf("zone %q: %w", z, err)
		}
		sa.ZoneId = uint32(ifi.Index)
	}
	return sa, unix.AF_INET6, nil
}

// setTimeouts bounds blocking reads, writes and connects on fd by d.
func setTimeouts(fd int, d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
}

// dial opens a socket of type typ to sa and returns its descriptor; TCP
// sockets get TCP_NODELAY, as neper sets it, so 1-byte messages go at once.
func dial(family, typ int, sa unix.Sockaddr, timeout time.Duration) (int, error) {
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := setTimeouts(fd, timeout); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("timeouts: %w", err)
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("TCP_NODELAY: %w", err)
		}
	}
	for {
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		if err == unix.EINPROGRESS || err == unix.EAGAIN {
			err = fmt.Errorf("connect timed out after %v", timeout)
		}
		return -1, fmt.Errorf("connect: %w", err)
	}
	return fd, nil
}

// writeFull writes all of b to fd, retrying on EINTR and short writes.
func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// errClosed is returned by readFull when the peer closed the stream.
var errClosed = errors.New("connection closed by peer")

// readFull reads exactly len(b) bytes from the stream fd.
func readFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errClosed
		}
		b = b[n:]
	}
	return nil
}

// RunClient runs one client test against a server and returns what it
// measured. It stops at o.Duration or o.Count, whichever comes first, and
// fails on the first error (a timeout included) except udp_rr losses.
func RunClient(o ClientOptions) (Result, error) {
	if o.RequestSize <= 0 {
		o.RequestSize = 1
	}
	if o.ResponseSize <= 0 {
		o.ResponseSize = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Duration <= 0 && o.Count <= 0 {
		return Result{}, errors.New("need a duration or a transaction count")
	}
	sa, family, err := sockaddr(o.Host, o.Port)
	if err != nil {
		return Result{}, err
	}
	req := make([]byte, o.RequestSize)
	resp := make([]byte, max(o.ResponseSize, 65536))
	var st stats
	st.samples = make([]time.Duration, 0, 1<<16)
	start := time.Now()
	deadline := start.Add(o.Duration)
	more := func() bool {
		if o.Count > 0 && st.n >= o.Count {
			return false
		}
		return o.Duration <= 0 || time.Now().Before(deadline)
	}
	var lost int64
	switch o.Test {
	case TCPRR:
		fd, err := dial(family, unix.SOCK_STREAM, sa, o.Timeout)
		if err != nil {
			return Result{}, err
		}
		defer unix.Close(fd)
		for more() {
			t0 := time.Now()
			if err := writeFull(fd, req); err != nil {
				return Result{}, fmt.Errorf("write: %w", err)
			}
			if err := readFull(fd, resp[:o.ResponseSize]); err != nil {
				return Result{}, fmt.Errorf("read: %w", err)
			}
			st.add(time.Since(t0))
		}
	case TCPCRR:
		for more() {
			t0 := time.Now()
			fd, err := dial(family, unix.SOCK_STREAM, sa, o.Timeout)
			if err != nil {
				return Result{}, fmt.Errorf("after %d transactions: %w", st.n, err)
			}
			err = writeFull(fd, req)
			if err == nil {
				err = readFull(fd, resp[:o.ResponseSize])
			}
			unix.Close(fd)
			if err != nil {
				return Result{}, fmt.Errorf("after %d transactions: %w", st.n, err)
			}
			st.add(time.Since(t0))
		}
	case UDPRR:
		fd, err := dial(family, unix.SOCK_DGRAM, sa, o.Timeout)
		if err != nil {
			return Result{}, err
		}
		defer unix.Close(fd)
		// A response that comes after its timeout must not be taken for
		// the next one: every request carries a sequence number when it
		// has room for one, and stale responses are skipped.
		var seq byte
		for more() {
			seq++
			req[0] = seq
			t0 := time.Now()
			if err := writeFull(fd, req); err != nil {
				return Result{}, fmt.Errorf("send: %w", err)
			}
			for {
				n, err := unix.Read(fd, resp)
				if err == unix.EINTR {
					continue
				}
				if err == unix.EAGAIN {
					lost++
					if lost > 1000 && lost > st.n {
						return Result{}, fmt.Errorf("udp_rr: %d requests lost, %d answered", lost, st.n)
					}
					break
				}
				if err != nil {
					return Result{}, fmt.Errorf("receive: %w", err)
				}
				if n < 1 || resp[0] != seq {
					continue // stale response to a request counted lost
				}
				st.add(time.Since(t0))
				break
			}
		}
	default:
		return Result{}, fmt.Errorf("unknown test %q (want %s, %s or %s)", o.Test, TCPRR, TCPCRR, UDPRR)
	}
	return st.result(o.Test, time.Since(start), lost), nil
}
