// Package procnet reads which ports are bound in a network namespace from
// its /proc/net/{tcp,tcp6,udp,udp6} tables: the input of pasta's automatic
// port forwarding ("auto"), which every second listens on the ports bound
// on the other side and stops listening on the ports no longer bound.
//
// # Theory of operation
//
// The tables are opened once, before the sandbox hides /proc, by a thread
// of the namespace they describe: a /proc/net file serves the namespace of
// the task that opened it for as long as it stays open, whatever thread
// reads it later (the seq_file keeps its struct net). So the host's tables
// are opened by the main thread (/proc/self/net) and the namespace's by the
// namespace worker (/proc/thread-self/net: /proc/self names the thread
// group leader, which stays in the host's namespace). Each scan re-reads
// the kept descriptors from offset 0 with pread(2), which restarts the
// seq_file's walk.
//
// Counted, as in the C original: TCP sockets in LISTEN (state 0A), and UDP
// sockets in the kernel's TCP_CLOSE state (07), which for UDP means bound
// and not connected: servers, but also clients that never called connect.
// Every local address counts, loopback ones included, and IPv4 and IPv6
// merge into one set of ports.
package procnet

import (
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
)

// States of /proc/net/{tcp,udp} lines (the kernel's enum, in hex in the st
// column) that mean "bound, waiting for peers".
const (
	StateListen = 0x0a // TCP_LISTEN
	StateClose  = 0x07 // TCP_CLOSE: for UDP, bound and unconnected
)

// Ports is a set of port numbers, one bit each.
type Ports [65536 / 64]uint64

// Add puts port in p.
func (p *Ports) Add(port uint16) { p[port>>6] |= 1 << (port & 63) }

// Remove takes port out of p.
func (p *Ports) Remove(port uint16) { p[port>>6] &^= 1 << (port & 63) }

// Has reports whether port is in p.
func (p *Ports) Has(port uint16) bool { return p[port>>6]&(1<<(port&63)) != 0 }

// Clear empties p.
func (p *Ports) Clear() { *p = Ports{} }

// Union adds every port of q to p.
func (p *Ports) Union(q *Ports) {
	for i := range p {
		p[i] |= q[i]
	}
}

// Subtract removes every port of q from p.
func (p *Ports) Subtract(q *Ports) {
	for i := range p {
		p[i] &^= q[i]
	}
}

// Count returns how many ports p holds.
func (p *Ports) Count() int {
	n := 0
	for _, w := range p {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
}

// ErrFormat is wrapped by the errors of Parse: a line that is not what the
// kernel writes.
var ErrFormat = errors.New("malformed /proc/net table")

// Parse adds to p the local port of every line of data, text of a
// /proc/net/{tcp,tcp6,udp,udp6} table, whose state is state. The header
// line ("  sl  local_address ...") is skipped wherever it is, and so is a
// last line without its newline (a table read in pieces may end in the
// middle of one: the caller reads it again from its start). Lines look
// like
//
//	"   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 ..."
//
// with a 32-digit address for IPv6. It does not allocate.
//
// data: the table; state: StateListen or StateClose. Returns the bytes
// consumed (up to and including the last newline), and an error wrapping
// ErrFormat for a complete line that cannot be read; the ports of the
// lines before it are in p.
func Parse(data []byte, state uint8, p *Ports) (int, error) {
	used := 0
	for used < len(data) {
		end := indexByte(data[used:], '\n')
		if end < 0 {
			break // cut short; the kernel ends every line with one
		}
		line := data[used : used+end]
		if w, _ := fields(line).next(); string(w) != "sl" {
			port, st, ok := parseLine(line)
			if !ok {
				return used, fmt.Errorf("%w: line %q", ErrFormat, clip(line))
			}
			if st == state {
				p.Add(port)
			}
		}
		used += end + 1
	}
	return used, nil
}

// parseLine reads the local port and the state of one table line. Returns
// ok false if the line is malformed.
func parseLine(line []byte) (port uint16, state uint8, ok bool) {
	f := fields(line)
	// f[0] "sl:", f[1] local address:port, f[2] remote, f[3] state.
	var words [4][]byte
	for k := 0; k < 4; k++ {
		w, rest := f.next()
		if w == nil {
			return 0, 0, false
		}
		words[k] = w
		f = rest
	}
	if len(words[0]) < 2 || words[0][len(words[0])-1] != ':' {
		return 0, 0, false
	}
	local := words[1]
	colon := indexByte(local, ':')
	if colon != 8 && colon != 32 {
		return 0, 0, false
	}
	if _, ok := hex(local[:colon], 32); !ok {
		return 0, 0, false
	}
	pp, ok := hex(local[colon+1:], 4)
	if !ok || len(local)-colon-1 != 4 {
		return 0, 0, false
	}
	s, ok := hex(words[3], 2)
	if !ok || len(words[3]) != 2 {
		return 0, 0, false
	}
	return uint16(pp), uint8(s), true
}

// fields walks the space-separated words of a line without allocating.
type fields []byte

// next returns the next word (nil if none) and the rest of the line.
func (f fields) next() ([]byte, fields) {
	i := 0
	for i < len(f) && f[i] == ' ' {
		i++
	}
	if i == len(f) {
		return nil, nil
	}
	j := i
	for j < len(f) && f[j] != ' ' {
		j++
	}
	return f[i:j], f[j:]
}

// hex parses b, at most max hexadecimal digits (upper or lower case), and
// reports whether it is one. The value is meaningful up to 16 digits only
// (addresses are only checked, never used).
func hex(b []byte, max int) (uint64, bool) {
	if len(b) == 0 || len(b) > max {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}

// indexByte returns the index of the first c in b, or -1.
func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// clip shortens a line for an error message.
func clip(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

// Tables are the four /proc/net tables of one network namespace, kept open
// for rescanning.
type Tables struct {
	tcp, tcp6, udp, udp6 table
	buf                  []byte
}

// table is one kept table: a raw descriptor, not an *os.File, because
// (*os.File).Fd puts the descriptor back into blocking mode with fcntl on
// every call, and fcntl is not on the sandbox's allow-list: the first
// rescan after seccomp died of SIGSYS that way.
type table struct {
	fd   int // -1: the table does not exist
	name string
}

// bufSize is how much one pread takes: the kernel's seq_file hands out at
// most a page per read anyway, with whole lines only.
const bufSize = 64 << 10

// Open opens the tables under dir ("/proc/self/net" for the calling
// process's namespace, "/proc/thread-self/net" on a thread that entered
// another one). A table that does not exist (IPv6 disabled in the kernel)
// is skipped. Call it before the sandbox, on a thread of the namespace.
//
// Returns the tables, or an error naming the file.
func Open(dir string) (*Tables, error) {
	t := &Tables{buf: make([]byte, bufSize)}
	for _, f := range []struct {
		name string
		dst  *table
	}{{"tcp", &t.tcp}, {"tcp6", &t.tcp6}, {"udp", &t.udp}, {"udp6", &t.udp6}} {
		path := filepath.Join(dir, f.name)
		*f.dst = table{fd: -1, name: path}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("port scan: opening %s: %w", path, err)
		}
		f.dst.fd = fd
	}
	return t, nil
}

// Close closes the tables.
func (t *Tables) Close() {
	for _, f := range []*table{&t.tcp, &t.tcp6, &t.udp, &t.udp6} {
		if f.fd >= 0 {
			unix.Close(f.fd)
		}
		f.fd = -1
	}
}

// Scan replaces tcp with the ports of the namespace's listening TCP
// sockets and udp with those of its bound, unconnected UDP sockets, both
// families merged. Either may be nil (not wanted).
//
// Returns the first read or format error; the sets then hold what was
// read before it.
func (t *Tables) Scan(tcp, udp *Ports) error {
	if tcp != nil {
		tcp.Clear()
		for _, f := range []*table{&t.tcp, &t.tcp6} {
			if err := t.scanFile(f, StateListen, tcp); err != nil {
				return err
			}
		}
	}
	if udp != nil {
		udp.Clear()
		for _, f := range []*table{&t.udp, &t.udp6} {
			if err := t.scanFile(f, StateClose, udp); err != nil {
				return err
			}
		}
	}
	return nil
}

var _ = allow.Syscall(allow.Pasta, "pread64", "procnet: re-reading the kept /proc/net/{tcp,udp}{,6} tables from the start, every second, for automatic port forwarding (Tables.scanFile)")

// scanFile reads the whole table f from its start and adds the ports in
// state to p. A read may end inside a line (seq_file copies what fits):
// the next pread starts at that line again.
func (t *Tables) scanFile(f *table, state uint8, p *Ports) error {
	if f.fd < 0 {
		return nil
	}
	var off int64
	for {
		n, err := unix.Pread(f.fd, t.buf, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("port scan: reading %s: %w", f.name, err)
		}
		if n == 0 {
			return nil
		}
		used, err := Parse(t.buf[:n], state, p)
		if err != nil {
			return fmt.Errorf("port scan: %s: %w", f.name, err)
		}
		if used == 0 {
			return fmt.Errorf("port scan: %s: %w: a line longer than %d bytes", f.name, ErrFormat, len(t.buf))
		}
		off += int64(used)
	}
}
