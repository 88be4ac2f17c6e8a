// Guest memory: the regions of SET_MEM_TABLE, mapped from the descriptors
// qemu sends, and the two translations every guest address goes through
// (guest physical addresses in descriptors, qemu's own virtual addresses
// for the rings), each bounds-checked against the regions.

package vhostuser

import (
	"fmt"

	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
)

// maxRegions is the most regions one SET_MEM_TABLE carries
// (VHOST_MEMORY_BASELINE_NREGIONS: without CONFIGURE_MEM_SLOTS, which we do
// not offer, qemu never sends more).
const maxRegions = 8

// region is one guest memory region: guest physical base gpa, size bytes,
// qemu's virtual address of it qva, and mem, the host view of exactly
// those bytes (mem[0] is guest address gpa). mapping is the whole mmap
// behind mem, from file offset 0, for munmap; nil for memory the caller
// owns (tests, fuzzing).
type region struct {
	gpa, size, qva uint64
	mem            []byte
	mapping        []byte
}

// memTable is the guest's memory as the front end last described it.
type memTable struct {
	r [maxRegions]region
	n int
}

// slice returns the host bytes of [addr, addr+l) if they lie whole in one
// region, addr taken as a guest physical address (qva false) or as qemu's
// virtual address (qva true). A range that crosses a region boundary or
// lies outside every region is refused (ok false); so is one whose end
// overflows. l may be 0 (then any address inside a region is fine).
func (m *memTable) slice(addr, l uint64, qva bool) ([]byte, bool) {
	for i := 0; i < m.n; i++ {
		r := &m.r[i]
		base := r.gpa
		if qva {
			base = r.qva
		}
		if addr < base || addr-base >= r.size {
			continue
		}
		off := addr - base
		if l > r.size-off {
			return nil, false
		}
		return r.mem[off : off+l : off+l], true
	}
	return nil, false
}

// piece returns the host bytes of the longest prefix of [addr, addr+l)
// that lies in one region, addr a guest physical address: the caller
// walks a buffer that crosses regions (x86 RAM is split around the PCI
// hole) piece by piece. ok is false if addr lies in no region.
//
// Preconditions: l > 0.
func (m *memTable) piece(addr, l uint64) ([]byte, bool) {
	for i := 0; i < m.n; i++ {
		r := &m.r[i]
		if addr < r.gpa || addr-r.gpa >= r.size {
			continue
		}
		off := addr - r.gpa
		k := min(l, r.size-off)
		return r.mem[off : off+k : off+k], true
	}
	return nil, false
}

// regionDesc is one region as SET_MEM_TABLE describes it.
type regionDesc struct {
	gpa, size, qva, offset uint64
}

var _ = allow.SyscallArg(allow.Passt, "mmap",
	allow.ArgCheck{Arg: 2, Mask: unix.PROT_EXEC, Value: 0, Name: "prot without PROT_EXEC"},
	"vhostuser.mapRegion: guest memory regions of SET_MEM_TABLE, PROT_READ|PROT_WRITE, MAP_SHARED (vhost-user)")

var _ = allow.Syscall(allow.Passt, "fstat", "vhostuser.mapRegion: the size of a guest memory region's file, which must hold the region (a mapping past its end is SIGBUS when touched)")

// mapRegion maps the memory of region d from descriptor fd: from file
// offset 0 for offset+size bytes, read-write and shared (the guest's RAM
// itself, not a copy), as the C original maps it; offsets need not be
// page-aligned that way. It does not close fd. Returns the region, or an
// error naming what was refused.
func mapRegion(fd int, d regionDesc) (region, error) {
	if d.size == 0 || d.size > 1<<48 || d.offset > 1<<48 {
		return region{}, fmt.Errorf("memory region: size %#x at offset %#x: out of range", d.size, d.offset)
	}
	if d.gpa+d.size < d.gpa || d.qva+d.size < d.qva {
		return region{}, fmt.Errorf("memory region: %#x bytes at %#x/%#x wrap around", d.size, d.gpa, d.qva)
	}
	total := d.offset + d.size
	if uint64(int(total)) != total {
		return region{}, fmt.Errorf("memory region: %#x bytes do not fit our address space", total)
	}
	// A mapping past the end of its file maps, and every touch of those
	// pages is SIGBUS, which no Go code recovers from: the file must
	// hold the whole region. (A front end that truncates the file later
	// can still do that to us, as to any back end: it is qemu, which we
	// trust with the memory, not the guest.)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return region{}, fmt.Errorf("memory region: fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < total {
		return region{}, fmt.Errorf("memory region: %#x bytes at offset %#x, past the end of its file (%#x bytes)", d.size, d.offset, st.Size)
	}
	b, err := unix.Mmap(fd, 0, int(total), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
	if err != nil {
		return region{}, fmt.Errorf("memory region: mmap of %#x bytes: %w", total, err)
	}
	return region{gpa: d.gpa, size: d.size, qva: d.qva, mem: b[d.offset:total:total], mapping: b}, nil
}

var _ = allow.Syscall(allow.Passt, "munmap", "vhostuser.memTable.unmap: guest memory regions dropped at a new SET_MEM_TABLE and at disconnect (vhost-user)")

// unmap unmaps every region and empties the table. Every slice into guest
// memory is invalid from now on: callers hold none across it.
func (m *memTable) unmap() {
	for i := 0; i < m.n; i++ {
		if m.r[i].mapping != nil {
			unix.Munmap(m.r[i].mapping)
		}
		m.r[i] = region{}
	}
	m.n = 0
}

// holding returns the region whose host view contains address a, or nil.
func (m *memTable) holding(a uintptr) *region {
	for i := 0; i < m.n; i++ {
		r := &m.r[i]
		s := addrOf(r.mem)
		if a >= s && a < s+uintptr(len(r.mem)) {
			return r
		}
	}
	return nil
}
