// Unit tests of the harness's parsers and naming; its behaviour with real
// namespaces is tested in test/nstest_selftest_test.go.

package nstest

import (
	"strings"
	"testing"
)

// TestNstestParseNstat checks nstat's output format, and that malformed
// lines are errors.
func TestNstestParseNstat(t *testing.T) {
	out := "#kernel\nIpInReceives                    12                 0.0\n" +
		"TcpRetransSegs                  3                  0.0\nTcpExtTCPTimeouts               2                  0.0\n"
	n, err := parseNstat(out)
	if err != nil {
		t.Fatal(err)
	}
	if n.TcpRetransSegs != 3 || n.TcpExtTCPTimeouts != 2 || n.All["IpInReceives"] != 12 {
		t.Errorf("parsed %+v", n)
	}
	for _, bad := range []string{"TcpRetransSegs\n", "TcpRetransSegs x 0.0\n", "TcpRetransSegs -1 0.0\n"} {
		if _, err := parseNstat(bad); err == nil {
			t.Errorf("parseNstat(%q): no error", bad)
		}
	}
}

// TestNstestName checks namespace names: prefix, test name made safe and
// short, role, PID, sequence number.
func TestNstestName(t *testing.T) {
	for _, c := range []struct {
		test, role string
		seq        int64
		want       string
	}{
		{"TestX", "", 0, "gopasst-TestX-42"},
		{"TestX/sub case", "inner", 0, "gopasst-TestX-sub-case-inner-42"},
		{"TestX", "", 3, "gopasst-TestX-42-3"},
		{strings.Repeat("a", 60), "", 0, "gopasst-" + strings.Repeat("a", 40) + "-42"},
	} {
		if got := nsName(c.test, c.role, 42, c.seq); got != c.want {
			t.Errorf("nsName(%q, %q, 42, %d) = %q, want %q", c.test, c.role, c.seq, got, c.want)
		}
	}
}
