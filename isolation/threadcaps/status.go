// Reading one thread's capability sets from /proc, for NarrowAll's checks
// (both builds) and the tests.

package threadcaps

import (
	"bytes"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// threadStatus is what NarrowAll looks at in /proc/self/task/TID/status.
type threadStatus struct {
	state                   byte // first letter of State: R, S, Z...
	inh, prm, eff, bnd, amb uint64
	// nsTID is the thread's ID in its own PID namespace (the last of
	// NSpid), which tgkill() takes: /proc may belong to an outer PID
	// namespace (the daemon's own is new, its /proc the parent's), where
	// the directory names are the outer IDs.
	nsTID int
}

// readStatus reads taskDir/TID/status (taskDir a descriptor of
// /proc/self/task or /proc/PID/task). It returns an error if the file
// cannot be read (the thread is gone) or lacks a field.
func readStatus(taskDir, tid int) (threadStatus, error) {
	var st threadStatus
	fd, err := unix.Openat(taskDir, strconv.Itoa(tid)+"/status", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err != nil {
			return st, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	fields := map[string]*uint64{"CapInh": &st.inh, "CapPrm": &st.prm, "CapEff": &st.eff, "CapBnd": &st.bnd, "CapAmb": &st.amb}
	found := 0
	for _, line := range bytes.Split(buf[:n], []byte("\n")) {
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		val = bytes.TrimSpace(val)
		if string(name) == "State" && len(val) > 0 {
			st.state = val[0]
			continue
		}
		if string(name) == "NSpid" {
			f := bytes.Fields(val)
			if len(f) > 0 {
				st.nsTID, _ = strconv.Atoi(string(f[len(f)-1]))
			}
			continue
		}
		if p, ok := fields[string(name)]; ok {
			v, err := strconv.ParseUint(string(val), 16, 64)
			if err != nil {
				return st, fmt.Errorf("thread %d: %s %q: %w", tid, name, val, err)
			}
			*p = v
			found++
		}
	}
	if found != len(fields) || st.nsTID <= 0 {
		return st, fmt.Errorf("thread %d: %d of %d capability lines in its status", tid, found, len(fields))
	}
	return st, nil
}

// listTasks returns the thread IDs in the directory taskDir.
func listTasks(taskDir int) ([]int, error) {
	// A new descriptor each time: reading from the start again.
	fd, err := unix.Openat(taskDir, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listing threads: %w", err)
	}
	defer unix.Close(fd)
	var tids []int
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, fmt.Errorf("listing threads: %w", err)
		}
		if n <= 0 {
			return tids, nil
		}
		names := make([]string, 0, 64)
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
		for _, name := range names {
			tid := 0
			for _, c := range name {
				if c < '0' || c > '9' {
					tid = -1
					break
				}
				tid = tid*10 + int(c-'0')
			}
			if tid > 0 {
				tids = append(tids, tid)
			}
		}
	}
}

// narrowed reports whether thread tid shows capability sets within keep
// in taskDir/TID/status (see threadStatus.narrowed). A thread that is gone
// counts as narrowed: it runs nothing any more.
func narrowed(taskDir, tid int, keep uint64) (bool, error) {
	st, err := readStatus(taskDir, tid)
	if err != nil {
		return true, err
	}
	return st.narrowed(keep), nil
}

// narrowed reports whether the sets are within keep: CapInh and CapAmb
// empty, CapPrm, CapEff and CapBnd inside keep; or the thread is a zombie.
func (st threadStatus) narrowed(keep uint64) bool {
	if st.state == 'Z' || st.state == 'X' {
		return true
	}
	return st.inh == 0 && st.amb == 0 && st.prm&^keep == 0 && st.eff&^keep == 0 && st.bnd&^keep == 0
}
