// Package guest holds what gopasst has learned about the guest (the VM or the
// namespace) from its traffic: its MAC address and the addresses it uses,
// which become the destinations of inbound traffic (addressing.md §5,
// "Learned from the guest").
package guest

import "net/netip"

// BroadcastMAC is the guest MAC used until the guest's first frame (passt).
var BroadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// State is the guest's learned addressing. It is owned by the event loop's
// thread: no locking.
type State struct {
	MAC [6]byte // source MAC of the guest's latest frame

	SeenV4   netip.Addr // last non-zero IPv4 source (unless -a fixed it)
	SeenV6   netip.Addr // last global IPv6 source
	SeenV6LL netip.Addr // last link-local IPv6 source
}
