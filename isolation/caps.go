// Capability sets: reading, narrowing and clearing them, and the sets each
// stage keeps (see doc.go for why each capability is kept).

package isolation

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// CapSet is a set of capabilities, bit n standing for capability n, as in
// the CapEff/CapPrm/CapBnd lines of /proc/PID/status.
type CapSet uint64

// Has reports whether capability c is in the set.
func (s CapSet) Has(c int) bool { return s&(1<<uint(c)) != 0 }

// String lists the capabilities by name, as "cap_net_admin,cap_sys_admin".
func (s CapSet) String() string {
	if s == 0 {
		return "none"
	}
	var names []string
	for c := 0; c < 64; c++ {
		if s.Has(c) {
			if n, ok := capNames[c]; ok {
				names = append(names, n)
			} else {
				names = append(names, fmt.Sprintf("cap_%d", c))
			}
		}
	}
	return strings.Join(names, ",")
}

// caps builds a set from capability numbers.
func caps(list ...int) CapSet {
	var s CapSet
	for _, c := range list {
		s |= 1 << uint(c)
	}
	return s
}

// capNames names the capabilities this package talks about.
var capNames = map[int]string{
	unix.CAP_DAC_OVERRIDE:     "cap_dac_override",
	unix.CAP_KILL:             "cap_kill",
	unix.CAP_SETGID:           "cap_setgid",
	unix.CAP_SETUID:           "cap_setuid",
	unix.CAP_SETPCAP:          "cap_setpcap",
	unix.CAP_NET_BIND_SERVICE: "cap_net_bind_service",
	unix.CAP_NET_ADMIN:        "cap_net_admin",
	unix.CAP_NET_RAW:          "cap_net_raw",
	unix.CAP_SYS_CHROOT:       "cap_sys_chroot",
	unix.CAP_SYS_PTRACE:       "cap_sys_ptrace",
	unix.CAP_SYS_ADMIN:        "cap_sys_admin",
	unix.CAP_SETFCAP:          "cap_setfcap",
}

// capState is the calling thread's effective, permitted and inheritable
// sets.
type capState struct {
	hdr  unix.CapUserHeader
	data [2]unix.CapUserData
}

// getCaps reads the calling thread's capability sets.
func getCaps() (*capState, error) {
	st := &capState{hdr: unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}}
	if err := unix.Capget(&st.hdr, &st.data[0]); err != nil {
		return nil, fmt.Errorf("capget: %w", err)
	}
	return st, nil
}

// effective returns the effective set.
func (st *capState) effective() CapSet {
	return CapSet(st.data[0].Effective) | CapSet(st.data[1].Effective)<<32
}

// narrowCaps removes from the calling thread's effective and permitted sets
// every capability not in keep, and empties its inheritable set, so that
// nothing is passed on at execve() either. Capabilities are per thread in
// Linux: see doc.go, "Capabilities and threads", for how the other threads
// of the process get the same sets. It returns an error from capget/capset.
func narrowCaps(keep CapSet) error {
	st, err := getCaps()
	if err != nil {
		return err
	}
	for i := range st.data {
		m := uint32(keep >> (32 * i))
		st.data[i].Effective &= m
		st.data[i].Permitted &= m
		st.data[i].Inheritable = 0
	}
	if err := unix.Capset(&st.hdr, &st.data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// clearAmbient empties the calling thread's ambient set, which Go's
// SysProcAttr.AmbientCaps may have filled to carry capabilities across our
// own re-exec as a non-root user.
func clearAmbient() error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && err != unix.EINVAL {
		return fmt.Errorf("clearing ambient capabilities: %w", err)
	}
	return nil
}

// clampBounding drops every capability not in keep from the calling
// thread's bounding set, so that no program executed later could gain it
// back (we never execute one after this point; the bounding set is the
// second wall). EINVAL (capability numbers the kernel does not know) is
// ignored; so is EPERM when the set already has nothing to drop.
func clampBounding(keep CapSet) error {
	for c := 0; c < 64; c++ {
		if keep.Has(c) {
			continue
		}
		err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		if err == nil || err == unix.EINVAL {
			continue
		}
		if err == unix.EPERM {
			// Without CAP_SETPCAP nothing can be dropped: fine only if
			// the capability is not in the set at all.
			in, _ := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0)
			if in == 0 {
				continue
			}
		}
		return fmt.Errorf("dropping %s from the bounding set: %w", CapSet(1<<uint(c)), err)
	}
	return nil
}

// statusCaps reads one capability line ("CapEff", "CapBnd"...) of
// /proc/self/task/TID/status, or of /proc/self/status with tid 0. Used by
// tests and debug output.
func statusCaps(tid int, field string) (CapSet, error) {
	path := "/proc/self/status"
	if tid != 0 {
		path = fmt.Sprintf("/proc/self/task/%d/status", tid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			var s uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &s); err != nil {
				return 0, err
			}
			return CapSet(s), nil
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, field)
}
