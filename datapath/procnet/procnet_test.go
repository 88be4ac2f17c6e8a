package procnet

import (
	"net"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Lines as this kernel writes them (6.x), header included.
const tcp4Table = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 662 1 00000000de2396f0 100 0 0 10 0                       
   1: 0100007F:1451 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 663 1 00000000de2396f0 100 0 0 10 0                       
   2: 0100007F:A2B4 0100007F:1451 01 00000000:00000000 00:00000000 00000000     0        0 664 1 00000000de2396f0 20 4 30 10 -1                      
`

const tcp6Table = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17012 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 17013 1 0000000000000000 100 0 0 10 0
`

const udpTable = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            
  103: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1001 2 0000000000000000 0         
  200: 0100007F:D431 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 1002 2 0000000000000000 0         
`

// TestParse reads the tables above: listening TCP ports, bound UDP ports,
// nothing from connected sockets.
func TestParse(t *testing.T) {
	var p Ports
	for _, tab := range []string{tcp4Table, tcp6Table} {
		if n, err := Parse([]byte(tab), StateListen, &p); err != nil || n != len(tab) {
			t.Fatalf("Parse: %d of %d bytes, %v", n, len(tab), err)
		}
	}
	for _, want := range []uint16{2024, 5201, 22, 8080} {
		if !p.Has(want) {
			t.Errorf("TCP port %d missing", want)
		}
	}
	if p.Has(0xA2B4) || p.Count() != 4 {
		t.Errorf("TCP ports: %d, connected socket's port %v", p.Count(), p.Has(0xA2B4))
	}
	var u Ports
	if _, err := Parse([]byte(udpTable), StateClose, &u); err != nil {
		t.Fatal(err)
	}
	if !u.Has(53) || u.Has(0xD431) || u.Count() != 1 {
		t.Errorf("UDP ports: %d, 53 %v", u.Count(), u.Has(53))
	}
}

// TestParseCut: a table cut inside a line consumes up to the last whole
// line and takes its ports only.
func TestParseCut(t *testing.T) {
	cut := strings.Index(tcp4Table, "   1:") + 10
	var p Ports
	n, err := Parse([]byte(tcp4Table[:cut]), StateListen, &p)
	if err != nil || n != strings.Index(tcp4Table, "   1:") || !p.Has(2024) || p.Has(5201) {
		t.Fatalf("cut table: %d bytes, %v, ports %d", n, err, p.Count())
	}
}

// TestParseMalformed: lines that are not the kernel's are errors.
func TestParseMalformed(t *testing.T) {
	for _, line := range []string{
		"   0: 00000000:07E8\n",
		"   0: 0000000:07E8 00000000:0000 0A\n",
		"   0: 00000000:7E8 00000000:0000 0A\n",
		"   0: 00000000:07G8 00000000:0000 0A\n",
		"   0 00000000:07E8 00000000:0000 0A\n",
		"   0: 00000000:07E8 00000000:0000 A\n",
		"garbage\n",
	} {
		var p Ports
		if _, err := Parse([]byte(line), StateListen, &p); err == nil {
			t.Errorf("%q: no error", line)
		}
	}
}

// TestScanLive binds a TCP listener and a UDP socket on this namespace's
// loopback, both families, and finds their ports through the kept tables;
// once they are closed, a rescan of the same descriptors no longer does.
func TestScanLive(t *testing.T) {
	tabs, err := Open("/proc/self/net")
	if err != nil {
		t.Fatal(err)
	}
	defer tabs.Close()
	var tcpPorts, udpPorts []uint16
	var closers []func() error
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("listen %s: %v", addr, err)
		}
		closers = append(closers, l.Close)
		tcpPorts = append(tcpPorts, uint16(l.Addr().(*net.TCPAddr).Port))
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, c.Close)
		udpPorts = append(udpPorts, uint16(c.LocalAddr().(*net.UDPAddr).Port))
	}
	var tp, up Ports
	if err := tabs.Scan(&tp, &up); err != nil {
		t.Fatal(err)
	}
	for _, p := range tcpPorts {
		if !tp.Has(p) {
			t.Errorf("listening TCP port %d not found", p)
		}
	}
	for _, p := range udpPorts {
		if !up.Has(p) {
			t.Errorf("bound UDP port %d not found", p)
		}
	}
	for _, c := range closers {
		c()
	}
	if err := tabs.Scan(&tp, &up); err != nil {
		t.Fatal(err)
	}
	for _, p := range tcpPorts {
		if tp.Has(p) {
			t.Errorf("closed TCP port %d still found", p)
		}
	}
	for _, p := range udpPorts {
		if up.Has(p) {
			t.Errorf("closed UDP port %d still found", p)
		}
	}
}

// TestScanOtherNamespace opens the tables from a thread that entered a new
// network namespace (/proc/thread-self/net), and checks that they keep
// describing that namespace when read from another thread: a port bound
// only there is found, one bound only here is not.
func TestScanOtherNamespace(t *testing.T) {
	if unix.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	type result struct {
		tabs *Tables
		port uint16
		fd   int
		err  error
	}
	ch := make(chan result)
	go func() {
		// Never unlocked: the thread, now in another namespace, ends
		// with the goroutine instead of serving others.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		// The wildcard needs no address on the (down) loopback.
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet4{})
		}
		if err == nil {
			err = unix.Listen(fd, 1)
		}
		var port uint16
		if err == nil {
			var sa unix.Sockaddr
			sa, err = unix.Getsockname(fd)
			if err == nil {
				port = uint16(sa.(*unix.SockaddrInet4).Port)
			}
		}
		var tabs *Tables
		if err == nil {
			tabs, err = Open("/proc/thread-self/net")
		}
		ch <- result{tabs, port, fd, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer unix.Close(r.fd)
	defer r.tabs.Close()
	here, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer here.Close()
	var tp Ports
	if err := r.tabs.Scan(&tp, nil); err != nil {
		t.Fatal(err)
	}
	if !tp.Has(r.port) {
		t.Errorf("port %d bound in the other namespace not found", r.port)
	}
	if p := uint16(here.Addr().(*net.TCPAddr).Port); tp.Has(p) {
		t.Errorf("port %d of this namespace found in the other's table", p)
	}
}

// TestManyLines: a table larger than one read buffer is read whole.
func TestManyLines(t *testing.T) {
	var b strings.Builder
	b.WriteString("  sl  local_address rem_address   st\n")
	var want Ports
	for i := 1; i <= 3000; i++ {
		b.WriteString("   1: 0100007F:")
		b.WriteString(strings.ToUpper(hex4(uint16(i))))
		b.WriteString(" 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n")
		want.Add(uint16(i))
	}
	var p Ports
	data := []byte(b.String())
	off := 0
	for off < len(data) {
		end := min(off+4096, len(data))
		n, err := Parse(data[off:end], StateListen, &p)
		if err != nil || n == 0 {
			t.Fatalf("at %d: %d, %v", off, n, err)
		}
		off += n
	}
	if p != want {
		t.Fatalf("got %d ports, want %d", p.Count(), want.Count())
	}
}

func hex4(v uint16) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[v>>12], digits[v>>8&15], digits[v>>4&15], digits[v&15]})
}

// FuzzParse: no input crashes Parse; what it consumes ends at a newline.
func FuzzParse(f *testing.F) {
	f.Add([]byte(tcp4Table), uint8(StateListen))
	f.Add([]byte(tcp6Table), uint8(StateListen))
	f.Add([]byte(udpTable), uint8(StateClose))
	f.Fuzz(func(t *testing.T, data []byte, state uint8) {
		var p Ports
		n, _ := Parse(data, state, &p)
		if n < 0 || n > len(data) || (n > 0 && data[n-1] != '\n') {
			t.Fatalf("consumed %d of %d", n, len(data))
		}
	})
}
