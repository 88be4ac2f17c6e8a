// Package fwd holds port-forwarding rules: the typed form of the -t/-u/-T/-U
// specs of the command line, and how a forwarded connection's addresses are
// chosen.
package fwd

// Spec is the parsed form of all -t (or -u, -T, -U) options of one kind.
type Spec struct {
	Rules []Rule
}

// Rule forwards a run of ports from a listening address to a target.
type Rule struct{}
