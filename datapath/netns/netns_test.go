// Unit tests of the namespace package that need no namespace.

package netns

import (
	"testing"

	"gopasst/isolation/allow"
)

// pasta's allow-list gains this package's calls; passt's does not.
func TestAllowList(t *testing.T) {
	has := func(mode allow.Mode, name string) bool {
		for _, v := range allow.Verdicts(mode) {
			if v.Name == name && v.Errno == 0 {
				return true
			}
		}
		return false
	}
	for _, name := range []string{"waitid", "newfstatat"} {
		if !has(allow.Pasta, name) {
			t.Errorf("pasta: %s not allowed", name)
		}
		if has(allow.Passt, name) {
			t.Errorf("passt: %s allowed", name)
		}
	}
}

// The siginfo fields reap reads are where the kernel puts them.
func TestLE32(t *testing.T) {
	if got := le32([]byte{1, 2, 3, 4}); got != 0x04030201 {
		t.Errorf("le32: %#x", got)
	}
}
