// iproute.go: links, addresses and routes of a namespace as ip(8) reports
// them (its JSON output), and the kernel's counters as nstat(8) does.

package nstest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Link is one interface as `ip -j addr show` reports it.
type Link struct {
	Index     int      `json:"ifindex"`
	Name      string   `json:"ifname"`
	Flags     []string `json:"flags"` // UP, LOWER_UP, NOARP, ...
	MTU       int      `json:"mtu"`
	TxQLen    int      `json:"txqlen"`
	OperState string   `json:"operstate"`
	MAC       string   `json:"address"`
	Addrs     []Addr   `json:"addr_info"`
}

// Addr is one address of a Link.
type Addr struct {
	Family     string `json:"family"` // inet, inet6
	Local      string `json:"local"`
	PrefixLen  int    `json:"prefixlen"`
	Scope      string `json:"scope"` // global, link, host
	Label      string `json:"label"`
	ValidLft   uint64 `json:"valid_life_time"`
	PrefLft    uint64 `json:"preferred_life_time"`
	NoDAD      bool   `json:"nodad"`
	Tentative  bool   `json:"tentative"`
	Deprecated bool   `json:"deprecated"`
	Dynamic    bool   `json:"dynamic"`
}

// Forever is the lifetime ip(8) reports for a permanent address.
const Forever = 4294967295

// Has reports whether the link has flag (as ip(8) spells it, "UP").
func (l *Link) Has(flag string) bool { return slices.Contains(l.Flags, flag) }

// Addr returns the link's address local/prefixLen ("198.18.0.2", 24), or
// nil.
func (l *Link) Addr(local string, prefixLen int) *Addr {
	for i := range l.Addrs {
		if l.Addrs[i].Local == local && l.Addrs[i].PrefixLen == prefixLen {
			return &l.Addrs[i]
		}
	}
	return nil
}

// Route is one route as `ip -j route show` reports it.
type Route struct {
	Dst      string   `json:"dst"` // "default" or a prefix
	Gateway  string   `json:"gateway"`
	Dev      string   `json:"dev"`
	Protocol string   `json:"protocol"`
	Scope    string   `json:"scope"`
	PrefSrc  string   `json:"prefsrc"`
	Metric   int      `json:"metric"`
	Flags    []string `json:"flags"`
}

// Links returns every interface of the namespace run executes in, with its
// addresses (`ip -j addr show`), within ctx.
func Links(ctx context.Context, run CmdFunc) ([]Link, error) {
	out, err := run(ctx, "ip", "-j", "addr", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("ip -j addr show: %w", err)
	}
	var links []Link
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("ip -j addr show: %w", err)
	}
	return links, nil
}

// LinkByName returns the link called name from links, or nil.
func LinkByName(links []Link, name string) *Link {
	for i := range links {
		if links[i].Name == name {
			return &links[i]
		}
	}
	return nil
}

// Routes returns the main-table routes of family ("-4" or "-6") in the
// namespace run executes in (`ip -j route show`), within ctx.
func Routes(ctx context.Context, run CmdFunc, family string) ([]Route, error) {
	out, err := run(ctx, "ip", "-j", family, "route", "show", "table", "main").Output()
	if err != nil {
		return nil, fmt.Errorf("ip -j %s route show: %w", family, err)
	}
	var routes []Route
	if err := json.Unmarshal(out, &routes); err != nil {
		return nil, fmt.Errorf("ip -j %s route show: %w", family, err)
	}
	return routes, nil
}

// Nstat holds the kernel's network counters of one namespace.
type Nstat struct {
	TcpRetransSegs    uint64
	TcpExtTCPTimeouts uint64
	// All maps every counter nstat reports to its absolute value.
	All map[string]uint64
}

// ReadNstat returns the absolute counters of the namespace run executes in
// (`nstat -asz`: absolute, zeros included, nstat's history file left
// alone), within ctx.
func ReadNstat(ctx context.Context, run CmdFunc) (Nstat, error) {
	out, err := run(ctx, "nstat", "-asz").Output()
	if err != nil {
		return Nstat{}, fmt.Errorf("nstat -asz: %w", err)
	}
	return parseNstat(string(out))
}

// parseNstat parses nstat's output: "#kernel", then lines "Name value
// rate". It returns an error for a line it cannot read.
func parseNstat(out string) (Nstat, error) {
	n := Nstat{All: map[string]uint64{}}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return Nstat{}, fmt.Errorf("nstat line %q: no value", line)
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return Nstat{}, fmt.Errorf("nstat line %q: %w", line, err)
		}
		n.All[f[0]] = v
	}
	n.TcpRetransSegs = n.All["TcpRetransSegs"]
	n.TcpExtTCPTimeouts = n.All["TcpExtTCPTimeouts"]
	return n, nil
}
