// wait.go: bounded polling.

package nstest

import (
	"testing"
	"time"
)

// pollInterval is how often WaitFor and Poll re-check their condition.
const pollInterval = 25 * time.Millisecond

// Poll calls cond until it returns true or timeout passes, and reports
// whether it returned true. cond is called at least once.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval)
	}
}

// WaitFor calls cond until it returns true, failing t if it has not done so
// after timeout.
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("condition not met within %v", timeout)
	}
}

// WaitForErr calls cond until it returns nil, failing t with cond's last
// error if it has not done so after timeout.
func WaitForErr(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	var last error
	if !Poll(timeout, func() bool { last = cond(); return last == nil }) {
		t.Fatalf("not ready within %v: %v", timeout, last)
	}
}
