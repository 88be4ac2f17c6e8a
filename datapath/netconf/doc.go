// Package netconf configures pasta's namespace over netlink: it always
// brings up lo and sizes the tap's transmit queue, reads or sets the tap's
// MAC, and with --config-net copies the host's addressing onto the tap
// (addressing.md §1, the --config-net bullet).
//
// # Theory of operation
//
// The work is split by network namespace, because a netlink socket talks to
// the namespace it was created in, whatever thread later uses it:
//
//  1. ReadHost runs in the daemon's own namespace (the host) before anything
//     else: it dumps the template interface's addresses and main-table
//     routes, per family, and keeps only what will be copied (non-deprecated,
//     non-link-scope addresses; routes whose output interface and every
//     multipath nexthop are the template). Nothing is read when
//     --config-net is off or a family is configured with a single address
//     and a single route (-a/-g, local mode, --no-copy-*).
//  2. Apply runs on a thread inside the target namespace (the namespace
//     worker), or ApplyHandle is given a netlink handle opened there. In
//     every case it brings lo up, sets the tap's transmit queue length
//     (TxQueueLen) and learns the tap's MAC (or sets --ns-mac-addr). With
//     --config-net it then sets the MTU and brings the tap up, copies or
//     sets addresses and routes per family, IPv4 first.
//
// # IPv6 duplicate address detection
//
// DAD would keep the namespace's link-local address tentative for about a
// second after link up, and pasta would have to wait for it. As the C
// original does, the tap is brought up with IFF_NOARP when IPv6 is on (the
// kernel then skips DAD and the link-local address is usable at once), the
// link-scope addresses are replaced with IFA_F_NODAD set (so that clearing
// IFF_NOARP, which restarts address configuration, does not start DAD
// again), and IFF_NOARP is cleared so that ARP and neighbour solicitation
// work. Copied IPv6 addresses get IFA_F_NODAD too: they are, strictly
// speaking, duplicates of the host's.
//
// # Route dependencies
//
// A route via a gateway can only be inserted once a route (or address)
// makes the gateway reachable, and the dump is not ordered by dependency.
// Instead of computing dependencies, every pending route is retried up to
// one pass per route: EEXIST counts as done (the kernel already made the
// prefix route of a copied address), ENETUNREACH and EHOSTUNREACH mean
// "try again next pass"; routes still unreachable after the last pass are
// skipped with a warning, as the C original ignores them.
package netconf
