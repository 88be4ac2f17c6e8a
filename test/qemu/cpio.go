// cpio.go: a writer of "newc" cpio archives, the format the kernel unpacks
// an initramfs from, with device nodes (which cpio(1) could only archive
// from a real /dev node, made as root).

package qemu

import (
	"fmt"
	"io"
	"strings"
)

// File types of a cpio entry's mode (the S_IF* bits of stat(2)).
const (
	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
	modeChar    = 0o020000
)

// cpioWriter writes a newc archive: each entry is a 110-byte ASCII header,
// the NUL-terminated name and the data, both padded to 4 bytes
// (Documentation/driver-api/early-userspace/buffer-format.rst).
type cpioWriter struct {
	w   io.Writer
	ino uint32
	err error
}

// newCpioWriter returns a writer of a newc archive to w.
func newCpioWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w} }

// entry writes one entry: name (relative, no leading slash), mode (type and
// permission bits), the device numbers for a device node, and data (the
// file's contents, or a symlink's target). Errors are sticky: Close
// reports the first.
func (c *cpioWriter) entry(name string, mode uint32, rdevMajor, rdevMinor uint32, data []byte) {
	if c.err != nil {
		return
	}
	if strings.HasPrefix(name, "/") || name == "" {
		c.err = fmt.Errorf("cpio: bad entry name %q", name)
		return
	}
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	// Fields: magic, ino, mode, uid, gid, nlink, mtime, filesize,
	// devmajor, devminor, rdevmajor, rdevminor, namesize (with the NUL),
	// check. Everything belongs to root and has mtime 0, so the archive
	// depends on its inputs only.
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name + "\x00"))
	c.pad(len(hdr) + len(name) + 1)
	c.write(data)
	c.pad(len(data))
}

// dir adds a directory with permissions perm.
func (c *cpioWriter) dir(name string, perm uint32) { c.entry(name, modeDir|perm, 0, 0, nil) }

// file adds a regular file with permissions perm and contents data.
func (c *cpioWriter) file(name string, perm uint32, data []byte) {
	c.entry(name, modeRegular|perm, 0, 0, data)
}

// symlink adds a symbolic link name pointing to target.
func (c *cpioWriter) symlink(name, target string) {
	c.entry(name, modeSymlink|0o777, 0, 0, []byte(target))
}

// charDev adds a character device node major:minor with permissions perm.
func (c *cpioWriter) charDev(name string, perm, major, minor uint32) {
	c.entry(name, modeChar|perm, major, minor, nil)
}

// Close writes the trailer entry that ends the archive and returns the
// first error met.
func (c *cpioWriter) Close() error {
	c.entry("TRAILER!!!", 0, 0, 0, nil)
	return c.err
}

// write writes b, remembering the first error.
func (c *cpioWriter) write(b []byte) {
	if c.err != nil || len(b) == 0 {
		return
	}
	_, c.err = c.w.Write(b)
}

// pad writes the NUL bytes that bring a field of n bytes to a multiple of
// four.
func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}
