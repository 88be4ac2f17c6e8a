// Resolvers and search list from /etc/resolv.conf, with the C original's
// rules for resolvers the guest cannot reach as they are (addressing.md §1).

package hostinfo

import (
	"net/netip"
	"strings"

	"gopasst/datapath/config"
	"gopasst/datapath/logging"
)

// dnsGiven reports whether ip needs no resolvers from the file: the family
// is off, or -D gave some of it.
func dnsGiven(ip *config.IP) bool { return !ip.Enabled || len(ip.DNS) > 0 }

// needResolvConf reports whether anything is still to be read from
// resolv.conf: resolvers of a family without -D (unless -D none), or the
// search list (unless -S gave one or none).
func needResolvConf(cfg *config.Config) bool {
	dnsSet := (dnsGiven(&cfg.V4) && dnsGiven(&cfg.V6)) || cfg.NoDNS
	searchSet := len(cfg.Search) > 0 || cfg.NoSearch
	return !dnsSet || !searchSet
}

// applyResolvConf takes from the contents of a resolv.conf what the
// command line left open:
//
//   - "nameserver" lines (anything from "%" on cut) of each enabled family
//     without -D, at most config.MaxDNS. The first of a family also
//     becomes --dns-host if that was not given. A resolver on loopback, or
//     at the address that maps to the host's loopback, cannot be reached
//     by the guest as it is: it is replaced by the --dns-forward address
//     if given, else by the map-host-loopback address (which then becomes
//     the DNS-match address, redirected to --dns-host), else dropped.
//   - the names of the first "search" line, at most config.MaxSearch.
func applyResolvConf(cfg *config.Config, data string) {
	dns4 := !dnsGiven(&cfg.V4) && !cfg.NoDNS
	dns6 := !dnsGiven(&cfg.V6) && !cfg.NoDNS
	search := len(cfg.Search) == 0 && !cfg.NoSearch
	for _, line := range strings.Split(data, "\n") {
		switch {
		case strings.HasPrefix(line, "nameserver ") && (dns4 || dns6):
			f := strings.Fields(line)
			text := f[len(f)-1]
			if i := strings.IndexByte(text, '%'); i >= 0 {
				text = text[:i]
			}
			a, err := netip.ParseAddr(text)
			if err != nil || a.Zone() != "" {
				continue
			}
			if a.Is4() && dns4 {
				addResolver(&cfg.V4, a)
			} else if a.Is6() && dns6 {
				addResolver(&cfg.V6, a)
			}
		case strings.HasPrefix(line, "search ") && search && len(cfg.Search) == 0:
			for _, name := range strings.Fields(line)[1:] {
				if len(cfg.Search) == config.MaxSearch {
					break
				}
				cfg.Search = append(cfg.Search, name)
			}
		}
	}
}

// addResolver adds one resolver of the host's to ip, as described for
// applyResolvConf.
func addResolver(ip *config.IP, a netip.Addr) {
	if !ip.DNSHost.IsValid() {
		ip.DNSHost = a
	}
	if a.IsLoopback() || (ip.MapHostLoopback.IsValid() && a == ip.MapHostLoopback) {
		switch {
		case ip.DNSMatch.IsValid():
			// --dns-forward (with --no-map-gw, the only way there):
			// advertise it, and map it to the host's resolver.
			a = ip.DNSMatch
		case ip.MapHostLoopback.IsValid():
			a = ip.MapHostLoopback
			ip.DNSMatch = a
		default:
			return // unreachable for the guest
		}
	}
	if len(ip.DNS) < config.MaxDNS {
		ip.DNS = append(ip.DNS, a)
	}
}

// warnDNS warns, as the C original does, when no resolver is left for a
// service that would advertise one.
func warnDNS(cfg *config.Config) {
	if cfg.NoDNS {
		return
	}
	if len(cfg.V4.DNS)+len(cfg.V6.DNS) == 0 {
		logging.Warnf("Couldn't get any nameserver address")
	}
	if !cfg.AdvertiseDNS {
		return
	}
	if cfg.V4.Enabled && !cfg.NoDHCP && len(cfg.V4.DNS) == 0 {
		logging.Warnf("No IPv4 nameserver available for DHCP")
	}
	if cfg.V6.Enabled && ((!cfg.NoNDP && !cfg.NoRA) || !cfg.NoDHCPv6) && len(cfg.V6.DNS) == 0 {
		logging.Warnf("No IPv6 nameserver available for NDP/DHCPv6")
	}
}
