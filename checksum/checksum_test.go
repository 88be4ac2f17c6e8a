// Tests of the checksum API and of every kernel against a naive reference.

package checksum

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// refSum is the reference: RFC 1071 read literally, one big-endian 16-bit
// word at a time into a 64-bit accumulator, folded with end-around carry.
func refSum(b []byte, initial uint16) uint16 {
	s := uint64(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(b[i])<<8 | uint64(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// kernelUnderTest is one way of computing Sum, under a name for messages.
type kernelUnderTest struct {
	name string
	sum  func(b []byte, initial uint16) uint16
}

// testKernels returns every kernel this machine can run, called directly
// (whatever the length thresholds), plus the dispatched Sum and SumVec over
// one buffer.
func testKernels(t testing.TB) []kernelUnderTest {
	avail := available()
	var ks []kernelUnderTest
	for k := kernelGeneric; k < numKernels; k++ {
		if !avail[k] {
			t.Logf("kernel %s not available on this CPU/build, not tested", kernelNames[k])
			continue
		}
		ks = append(ks, kernelUnderTest{kernelNames[k], func(b []byte, initial uint16) uint16 {
			return Fold64sum(sumWith(k, b), initial)
		}})
	}
	ks = append(ks,
		kernelUnderTest{"Sum", Sum},
		kernelUnderTest{"SumVec1", func(b []byte, initial uint16) uint16 {
			return SumVec([][]byte{b}, initial)
		}})
	return ks
}

// Fold64sum turns a kernel's little-endian 64-bit sum and a big-endian
// initial value into Sum's result, as Sum does.
func Fold64sum(le uint64, initial uint16) uint16 {
	s := add64(le, uint64(initial>>8|initial<<8))
	f := Fold64(s)
	return f>>8 | f<<8
}

// randomBuffer returns n random bytes from r.
func randomBuffer(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// checkAll compares every kernel with the reference on b.
func checkAll(t *testing.T, ks []kernelUnderTest, b []byte, initial uint16, what string) {
	t.Helper()
	want := refSum(b, initial)
	for _, k := range ks {
		if got := k.sum(b, initial); got != want {
			t.Fatalf("%s: kernel %s, len %d, initial %#04x: got %#04x, want %#04x", what, k.name, len(b), initial, got, want)
		}
	}
}

func TestKnownValues(t *testing.T) {
	// RFC 1071 §3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
	rfc := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := Sum(rfc, 0); got != 0xddf2 {
		t.Errorf("RFC 1071 example: Sum = %#04x, want 0xddf2", got)
	}
	// A real IPv4 header with its checksum b861 in place: the checksum over
	// it, field included, is 0.
	ip := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
		0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if got := Checksum(ip, 0); got != 0 {
		t.Errorf("valid IPv4 header: Checksum = %#04x, want 0", got)
	}
	ip[10], ip[11] = 0, 0
	if got := Checksum(ip, 0); got != 0xb861 {
		t.Errorf("IPv4 header: Checksum = %#04x, want 0xb861", got)
	}
	// Odd length: the last byte is the high byte of a zero-padded word.
	if got := Sum([]byte{0x12, 0x34, 0x56}, 0); got != 0x6834 {
		t.Errorf("odd length: Sum = %#04x, want 0x6834", got)
	}
	if got := Sum(nil, 0x1234); got != 0x1234 {
		t.Errorf("empty: Sum = %#04x, want the initial 0x1234", got)
	}
	if got := Sum(make([]byte, 100), 0); got != 0 {
		t.Errorf("all zero: Sum = %#04x, want 0", got)
	}
	if got := Sum([]byte{0xff, 0xff}, 0); got != 0xffff {
		t.Errorf("ffff: Sum = %#04x, want 0xffff (-0 stays -0)", got)
	}
}

func TestFoldCombine(t *testing.T) {
	cases := []struct {
		in   uint64
		want uint16
	}{
		{0, 0}, {1, 1}, {0xffff, 0xffff}, {0x10000, 1}, {0x1fffe, 0xffff},
		{0xffffffff, 0xffff}, {0x12345678, 0x68ac}, {1 << 32, 1},
		{0xffffffffffffffff, 0xffff}, {0x0001000100010001, 4},
	}
	for _, c := range cases {
		if c.in <= 0xffffffff {
			if got := Fold(uint32(c.in)); got != c.want {
				t.Errorf("Fold(%#x) = %#04x, want %#04x", c.in, got, c.want)
			}
		}
		if got := Fold64(c.in); got != c.want {
			t.Errorf("Fold64(%#x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		a, b := randomBuffer(r, 2*r.IntN(50)), randomBuffer(r, r.IntN(100))
		whole := append(append([]byte{}, a...), b...)
		if got, want := Combine(Sum(a, 0), Sum(b, 0)), Sum(whole, 0); got != want {
			t.Fatalf("Combine of %d+%d bytes = %#04x, want %#04x", len(a), len(b), got, want)
		}
	}
}

// TestKernelsEveryLength checks every kernel against the reference at every
// length 0..2048 and every start offset 0..63, on random bytes and on all-0xff
// bytes (every add carries).
func TestKernelsEveryLength(t *testing.T) {
	ks := testKernels(t)
	r := rand.New(rand.NewPCG(3, 4))
	const maxLen, maxOff = 2048, 64
	random := randomBuffer(r, maxLen+maxOff)
	ones := make([]byte, maxLen+maxOff)
	for i := range ones {
		ones[i] = 0xff
	}
	for off := 0; off < maxOff; off++ {
		for n := 0; n <= maxLen; n++ {
			initial := uint16(r.Uint32())
			checkAll(t, ks, random[off:off+n], initial, fmt.Sprintf("random, offset %d", off))
			checkAll(t, ks, ones[off:off+n], 0xffff, fmt.Sprintf("all 0xff, offset %d", off))
		}
	}
}

// TestKernelsLong checks random lengths up to 65535 at random offsets, and
// 65535 bytes of 0xff at every offset 0..63.
func TestKernelsLong(t *testing.T) {
	ks := testKernels(t)
	r := rand.New(rand.NewPCG(5, 6))
	const maxLen = 65535
	random := randomBuffer(r, maxLen+64)
	ones := make([]byte, maxLen+64)
	for i := range ones {
		ones[i] = 0xff
	}
	for range 500 {
		off, n := r.IntN(64), r.IntN(maxLen+1)
		checkAll(t, ks, random[off:off+n], uint16(r.Uint32()), fmt.Sprintf("random, offset %d", off))
	}
	for off := 0; off < 64; off++ {
		checkAll(t, ks, random[off:off+maxLen], 0, fmt.Sprintf("random, offset %d", off))
		checkAll(t, ks, ones[off:off+maxLen], 0xffff, fmt.Sprintf("all 0xff, offset %d", off))
	}
	// Sparse 0xff words with everything else zero, so the result is neither
	// 0 nor 0xffff by accident.
	sparse := make([]byte, maxLen)
	for i := 0; i < len(sparse); i += 97 {
		sparse[i] = 0xff
	}
	checkAll(t, ks, sparse, 0, "sparse")
}

// TestSumVec splits random and all-0xff buffers into random pieces (odd,
// even and empty lengths) and checks SumVec against Sum of the whole.
func TestSumVec(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	var bufs [][]byte
	for i := range 3000 {
		n := r.IntN(3000)
		if i%10 == 0 {
			n = r.IntN(65536)
		}
		b := randomBuffer(r, n)
		if i%7 == 0 {
			for j := range b {
				b[j] = 0xff
			}
		}
		bufs = bufs[:0]
		for rest := b; len(rest) > 0 || r.IntN(4) == 0; {
			k := 0
			switch r.IntN(4) {
			case 0:
				k = r.IntN(4) // tiny, often odd, sometimes empty
			case 1:
				k = r.IntN(300)
			default:
				k = r.IntN(len(rest) + 1)
			}
			k = min(k, len(rest))
			bufs = append(bufs, rest[:k])
			rest = rest[k:]
			if len(rest) == 0 && r.IntN(2) == 0 {
				break
			}
		}
		initial := uint16(r.Uint32())
		if got, want := SumVec(bufs, initial), refSum(b, initial); got != want {
			lens := make([]int, len(bufs))
			for j := range bufs {
				lens[j] = len(bufs[j])
			}
			t.Fatalf("SumVec of pieces %v = %#04x, want %#04x", lens, got, want)
		}
	}
	if got := SumVec(nil, 0xabcd); got != 0xabcd {
		t.Errorf("SumVec(nil) = %#04x, want the initial 0xabcd", got)
	}
}

// TestPseudoHeaders compares the pseudo-header sums with the reference
// over the pseudo-header laid out in bytes as the RFCs draw it.
func TestPseudoHeaders(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for range 10000 {
		var s4, d4 [4]byte
		var s6, d6 [16]byte
		for i := range s6 {
			s6[i], d6[i] = byte(r.Uint32()), byte(r.Uint32())
		}
		copy(s4[:], s6[:])
		copy(d4[:], d6[:])
		if r.IntN(8) == 0 {
			s4, s6 = [4]byte{0xff, 0xff, 0xff, 0xff}, [16]byte{0: 0xff, 15: 0xff}
		}
		proto := uint8(r.Uint32())
		len16, len32 := uint16(r.Uint32()), r.Uint32()

		// RFC 768 / RFC 793 §3.1.
		ph4 := append(append(append([]byte{}, s4[:]...), d4[:]...), 0, proto, byte(len16>>8), byte(len16))
		if got, want := PseudoHeaderIPv4(s4, d4, proto, len16), refSum(ph4, 0); got != want {
			t.Fatalf("PseudoHeaderIPv4(%v, %v, %d, %d) = %#04x, want %#04x", s4, d4, proto, len16, got, want)
		}
		// RFC 8200 §8.1.
		ph6 := append(append([]byte{}, s6[:]...), d6[:]...)
		ph6 = binary.BigEndian.AppendUint32(ph6, len32)
		ph6 = append(ph6, 0, 0, 0, proto)
		if got, want := PseudoHeaderIPv6(&s6, &d6, proto, len32), refSum(ph6, 0); got != want {
			t.Fatalf("PseudoHeaderIPv6(%v, %v, %d, %d) = %#04x, want %#04x", s6, d6, proto, len32, got, want)
		}
	}
}

// TestUpdate rewrites random 16- and 32-bit fields of random packets (as NAT
// rewrites ports and addresses) and checks that the incrementally updated
// checksum equals a full recomputation.
func TestUpdate(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for i := range 20000 {
		b := randomBuffer(r, 2+2*r.IntN(40))
		if i%5 == 0 {
			for j := range b {
				b[j] = 0xff
			}
		}
		ph := uint16(r.Uint32())
		check := Checksum(b, ph)
		if len(b) >= 4 && r.IntN(2) == 0 {
			at := 2 * r.IntN(len(b)/2-1)
			old := binary.BigEndian.Uint32(b[at:])
			nw := r.Uint32()
			if r.IntN(4) == 0 {
				nw = old ^ 0xffff0000
			}
			binary.BigEndian.PutUint32(b[at:], nw)
			if got, want := Update32(check, old, nw), Checksum(b, ph); got != want && !(want == 0xffff && got == 0) {
				t.Fatalf("Update32(%#04x, %#08x, %#08x) = %#04x, recomputed %#04x", check, old, nw, got, want)
			}
			continue
		}
		at := 2 * r.IntN(len(b)/2)
		old := binary.BigEndian.Uint16(b[at:])
		nw := uint16(r.Uint32())
		binary.BigEndian.PutUint16(b[at:], nw)
		if got, want := Update16(check, old, nw), Checksum(b, ph); got != want && !(want == 0xffff && got == 0) {
			t.Fatalf("Update16(%#04x, %#04x, %#04x) = %#04x, recomputed %#04x", check, old, nw, got, want)
		}
	}
	// RFC 1624 §4: eqn. 3 gives 0x0000 where eqn. 2 would give 0xffff.
	if got := Update16(0xdd2f, 0x5555, 0x3285); got != 0x0000 {
		t.Errorf("RFC 1624 §4 example: Update16 = %#04x, want 0x0000", got)
	}
}

// TestNoAllocs proves the per-packet entry points allocate nothing.
func TestNoAllocs(t *testing.T) {
	buf := make([]byte, 65535)
	vec := [][]byte{buf[:1], buf[1:1500], buf[1500:]}
	var src, dst [16]byte
	var sink uint16
	cases := map[string]func(){
		"Sum64":      func() { sink += Sum(buf[:64], 0) },
		"Sum65535":   func() { sink += Sum(buf, 0) },
		"Checksum":   func() { sink += Checksum(buf[1:1501], sink) },
		"SumVec":     func() { sink += SumVec(vec, 0) },
		"Pseudo4":    func() { sink += PseudoHeaderIPv4([4]byte{1, 2, 3, 4}, [4]byte{5, 6, 7, 8}, 6, 1500) },
		"Pseudo6":    func() { sink += PseudoHeaderIPv6(&src, &dst, 17, 1500) },
		"Update16":   func() { sink = Update16(sink, 1, 2) },
		"Update32":   func() { sink = Update32(sink, 1, 2) },
		"StackArray": func() { var a [1500]byte; sink += Sum(a[:], 0) },
	}
	for name, f := range cases {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
	_ = sink
}

// TestChoose checks the kernel choice: automatic, forced, unsupported and
// unknown overrides.
func TestChoose(t *testing.T) {
	all := [numKernels]bool{true, true, true}
	goOnly := [numKernels]bool{kernelGeneric: true}
	cases := []struct {
		env   string
		avail [numKernels]bool
		want  kernelID
		note  string
	}{
		{"", all, kernelAVX512, "automatic"},
		{"", [numKernels]bool{true, true, false}, kernelAVX2, "automatic"},
		{"", goOnly, kernelGeneric, "automatic"},
		{"generic", all, kernelGeneric, "forced"},
		{"avx2", all, kernelAVX2, "forced"},
		{"avx512", goOnly, kernelGeneric, "not supported"},
		{"sse9", all, kernelAVX512, "unknown"},
	}
	for _, c := range cases {
		got, why := choose(c.env, c.avail)
		if got != c.want || !strings.Contains(why, c.note) {
			t.Errorf("choose(%q, %v) = %s, %q; want %s, mentioning %q", c.env, c.avail, kernelNames[got], why, kernelNames[c.want], c.note)
		}
	}
}

// TestEnvOverride runs this test binary again with GOPASST_CSUM set to each
// kernel this machine can run and checks that Kernel reports it.
func TestEnvOverride(t *testing.T) {
	if os.Getenv("CHECKSUM_PRINT_KERNEL") != "" {
		fmt.Printf("kernel=%s\n%s\n", Kernel(), Describe())
		return
	}
	avail := available()
	for k := kernelGeneric; k < numKernels; k++ {
		if !avail[k] {
			continue
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestEnvOverride$", "-test.count=1")
		cmd.Env = append(os.Environ(), "CHECKSUM_PRINT_KERNEL=1", EnvKernel+"="+kernelNames[k])
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s=%s: %v\n%s", EnvKernel, kernelNames[k], err, out)
		}
		if !strings.Contains(string(out), "kernel="+kernelNames[k]+"\n") {
			t.Errorf("%s=%s: child reported\n%s", EnvKernel, kernelNames[k], out)
		}
	}
	t.Logf("this process: %s", Describe())
}
