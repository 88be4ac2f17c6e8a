// The host's ephemeral port range, which port-forwarding specs without
// include ranges ("all", "auto", exclusions only) leave out.

package hostinfo

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"gopasst/datapath/fwd"
)

// PortRangePath is the sysctl holding the ephemeral port range of the
// current network namespace.
const PortRangePath = "/proc/sys/net/ipv4/ip_local_port_range"

// EphemeralRange returns the host's ephemeral port range as read from
// PortRangePath. If the file cannot be read or parsed it returns the range
// of RFC 6335 (49152-65535) and an error saying why, which the caller
// reports as a warning, as the C original does.
func EphemeralRange() (first, last uint16, err error) {
	data, err := os.ReadFile(PortRangePath)
	if err != nil {
		return fwd.DefaultEphemeralFirst, fwd.DefaultEphemeralLast, fmt.Errorf("unable to read %s: %w", PortRangePath, err)
	}
	first, last, err = ParsePortRange(string(data))
	if err != nil {
		return fwd.DefaultEphemeralFirst, fwd.DefaultEphemeralLast, fmt.Errorf("unable to parse %s: %w", PortRangePath, err)
	}
	return first, last, nil
}

// ParsePortRange parses the contents of ip_local_port_range: two decimal
// ports separated by white space (the kernel writes a tab), first ≤ last.
// It returns an error for anything else.
func ParsePortRange(s string) (first, last uint16, err error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("%q: want two ports", s)
	}
	a, err1 := strconv.ParseUint(f[0], 10, 16)
	b, err2 := strconv.ParseUint(f[1], 10, 16)
	if err1 != nil || err2 != nil || a > b {
		return 0, 0, fmt.Errorf("%q: bad port range", s)
	}
	return uint16(a), uint16(b), nil
}
