// The printed allow-lists (--print-seccomp) of the built binaries: every
// entry names the place in the tree that registered it, beside the call
// that needs it, and nothing is allowed "for later".

package test

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopasst/test/nstest"
)

// seccompEntry matches an entry line of --print-seccomp; seccompSite a
// reason line under it ("dir/file.go:line: why").
var (
	seccompEntry = regexp.MustCompile(`^  ([a-z0-9_]+) +\d+  (runtime\+ours|runtime|ours) `)
	seccompSite  = regexp.MustCompile(`^      ([a-z0-9_]+)/([a-z0-9_]+\.go):(\d+): (.+)$`)
)

// TestSeccompCallSites runs passt and pasta --print-seccomp and checks
// that every entry has at least one reason line naming a Go file of the
// tree (dir/file.go:line) that exists, that our own entries come from the
// datapath's and the logger's packages and the runtime's from isolation's
// list, that no reason says the entry is interim or for later, and that
// the calls no code makes after the filter (the ones the lists used to
// carry for features not built yet) are not allowed.
func TestSeccompCallSites(t *testing.T) {
	bin := nstest.Binary(t, "pasta")
	tree := filepath.Dir(bin)
	for _, name := range []string{"passt", "pasta"} {
		ctx, cancel := context.WithTimeout(context.Background(), nstest.CmdTimeout)
		out, err := exec.CommandContext(ctx, filepath.Join(tree, name), "--print-seccomp").Output()
		cancel()
		if err != nil {
			t.Fatalf("%s --print-seccomp: %v", name, err)
		}
		var entry, who string
		sites := 0
		allowed := map[string]bool{}
		check := func() {
			if entry != "" && sites == 0 {
				t.Errorf("%s: %s has no call site", name, entry)
			}
		}
		for _, line := range strings.Split(string(out), "\n") {
			if m := seccompEntry.FindStringSubmatch(line); m != nil {
				check()
				entry, who, sites = m[1], m[2], 0
				allowed[entry] = !strings.Contains(line, "fail with")
				continue
			}
			m := seccompSite.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			sites++
			dir, file, why := m[1], m[2], m[4]
			found := false
			for _, pattern := range []string{filepath.Join(tree, dir, file), filepath.Join(tree, "*", dir, file)} {
				m, _ := filepath.Glob(pattern)
				found = found || len(m) > 0
			}
			if !found {
				t.Errorf("%s: %s: %s/%s is not a file of the tree", name, entry, dir, file)
			}
			if low := strings.ToLower(why); strings.Contains(low, "interim") || strings.Contains(low, "later") {
				t.Errorf("%s: %s registered for later: %s", name, entry, line)
			}
			if who == "runtime" && dir != "isolation" {
				t.Errorf("%s: runtime entry %s registered outside isolation: %s", name, entry, line)
			}
		}
		check()
		if len(allowed) < 30 {
			t.Fatalf("%s --print-seccomp: only %d entries:\n%s", name, len(allowed), out)
		}
		// Called by nothing once the filter is in: timers are made
		// before, and passt has no splice path nor port scan, so its
		// listeners are all opened before the filter too.
		never := []string{"timerfd_settime", "execve", "openat"}
		// pasta's splice path (pipes, splice, F_SETPIPE_SZ) and the
		// listeners "auto" opens and closes as the scan finds ports.
		splice := []string{"splice", "pipe2", "listen", "fcntl", "getsockname"}
		if name == "passt" {
			never = append(never, splice...)
		} else {
			for _, need := range splice {
				if !allowed[need] {
					t.Errorf("pasta does not allow %s, which the splice path or the port scan calls", need)
				}
			}
		}
		for _, n := range never {
			if allowed[n] {
				t.Errorf("%s allows %s, which nothing calls after the filter", name, n)
			}
		}
		for _, need := range []string{"recvmmsg", "sendmmsg", "sendmsg", "recvmsg", "epoll_pwait", "accept4", "ftruncate"} {
			if !allowed[need] {
				t.Errorf("%s does not allow %s", name, need)
			}
		}
		if name == "pasta" && (!allowed["readv"] || !allowed["waitid"]) {
			t.Errorf("pasta: tap reads (readv) or reaping the command (waitid) not allowed")
		}
		if name == "passt" && (allowed["waitid"] || allowed["readv"]) {
			t.Errorf("passt allows pasta's waitid or readv")
		}
	}
}
