//go:build !cgo

// The stub for builds without cgo: joining a user namespace is unavailable
// (a Go process cannot do it once running), and capability narrowing at
// start is left to Go code, one thread at a time.

package nsenter

import (
	"errors"
	"os"
)

// Available reports whether this build can join a user namespace.
const Available = false

// ErrUnavailable is returned when a join is asked of a build without cgo.
var ErrUnavailable = errors.New("joining an existing user namespace needs a build with cgo")

var initErr error

func init() {
	if _, ok := os.LookupEnv(EnvUserNS); ok {
		initErr = ErrUnavailable
	}
	os.Unsetenv(EnvUserNS)
	os.Unsetenv(EnvCaps)
	os.Unsetenv(EnvFDTable)
}

// Joined reports ErrUnavailable if a join was asked for.
func Joined() (bool, error) { return false, initErr }

// CapsNarrowed reports false: nothing runs before the runtime here.
func CapsNarrowed() (bool, error) { return false, nil }

// BeforeSeccomp has nothing to prepare without a C library in the process.
func BeforeSeccomp() error { return nil }
