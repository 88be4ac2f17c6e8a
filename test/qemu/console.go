// console.go: the guest's report, parsed from the GUEST-* lines its /init
// prints on the serial console.

package qemu

import (
	"strconv"
	"strings"
)

// Lease is the DHCP lease the guest printed (GUEST-LEASE).
type Lease struct {
	IP, Mask, Router, MTU, DNS string
}

// Ping is one address the guest pinged and how many replies came back
// (GUEST-PING).
type Ping struct {
	Dst            string
	Sent, Received int
}

// Report is what the guest said about its run.
type Report struct {
	NIC    string // the card's MAC address (GUEST-NIC)
	Lease  *Lease // nil if no lease was printed
	Pings  []Ping
	Size   int64 // bytes downloaded (GUEST-SIZE), -1 if not printed
	SHA256 string
	Done   bool   // GUEST-DONE: every step ran
	Fail   string // the reason of GUEST-FAIL, "" if none
}

// guestLine is one GUEST-KIND line: its kind, the words after it, and
// those of the form key=value.
type guestLine struct {
	kind string
	rest string
	kv   map[string]string
}

// guestLines returns the GUEST- lines of console text. A line may carry
// kernel output before the marker (the console is shared), which is
// skipped.
func guestLines(text string) []guestLine {
	var out []guestLine
	for _, line := range strings.Split(text, "\n") {
		i := strings.Index(line, "GUEST-")
		if i < 0 {
			continue
		}
		kind, rest, _ := strings.Cut(strings.TrimSpace(line[i+len("GUEST-"):]), " ")
		if kind == "" {
			continue
		}
		l := guestLine{kind: kind, rest: strings.TrimSpace(rest), kv: map[string]string{}}
		for _, w := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(w, "="); ok {
				l.kv[k] = v
			}
		}
		out = append(out, l)
	}
	return out
}

// ParseConsole returns the guest's report from console text. Values that
// do not parse are left at their zero (Size at -1), so the checks on the
// report fail with the console to look at.
func ParseConsole(text string) Report {
	r := Report{Size: -1}
	for _, l := range guestLines(text) {
		switch l.kind {
		case "NIC":
			r.NIC = l.kv["mac"]
		case "LEASE":
			r.Lease = &Lease{IP: l.kv["ip"], Mask: l.kv["mask"], Router: l.kv["router"], MTU: l.kv["mtu"], DNS: l.kv["dns"]}
		case "PING":
			p := Ping{Dst: l.kv["dst"]}
			p.Sent, _ = strconv.Atoi(l.kv["sent"])
			p.Received, _ = strconv.Atoi(l.kv["received"])
			r.Pings = append(r.Pings, p)
		case "SIZE":
			if f := strings.Fields(l.rest); len(f) > 0 {
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					r.Size = n
				}
			}
		case "SHA256":
			if f := strings.Fields(l.rest); len(f) > 0 {
				r.SHA256 = f[0]
			}
		case "DONE":
			r.Done = true
		case "FAIL":
			if r.Fail == "" {
				r.Fail = l.rest
			}
		}
	}
	return r
}

// Ping returns the report's ping of dst, and whether there was one.
func (r Report) Ping(dst string) (Ping, bool) {
	for _, p := range r.Pings {
		if p.Dst == dst {
			return p, true
		}
	}
	return Ping{}, false
}
