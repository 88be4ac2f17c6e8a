// Tests that the kernels never read past the end of a buffer, using a
// buffer that ends right before an inaccessible page.

package checksum

import (
	"syscall"
	"testing"
)

// TestNoOverread sums every tail of a page that is followed by a PROT_NONE
// page: a kernel reading even one byte past the end would fault. The
// AVX-512 kernel relies on its masked load suppressing faults on masked-out
// bytes; the others must simply stop at the end.
func TestNoOverread(t *testing.T) {
	page := syscall.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, 2*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		t.Skipf("mmap: %v", err)
	}
	defer syscall.Munmap(mem)
	if err := syscall.Mprotect(mem[page:], syscall.PROT_NONE); err != nil {
		t.Skipf("mprotect: %v", err)
	}
	buf := mem[:page]
	for i := range buf {
		buf[i] = byte(i*13 + 5)
	}
	ks := testKernels(t)
	for n := 0; n <= 1024; n++ {
		checkAll(t, ks, buf[page-n:], 0, "end of page")
	}
	checkAll(t, ks, buf, 0, "whole page")
}
