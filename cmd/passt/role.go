// Roles this binary plays when it re-executes itself for something other
// than gopasst proper, and the runtime setting the seccomp sandbox needs.

// The runtime must not re-read CPU affinity and cgroup limits after the
// seccomp filter is in (sched_getaffinity, pread64 are not allowed):
// isolation.Postfork also fixes GOMAXPROCS, which stops the updates too.
//go:debug updatemaxprocs=0

package main

import "gopasst/datapath/netns"

// runRole runs the role this process was re-executed for, if any, and then
// never returns; it returns false at once for gopasst itself. Roles: pasta's
// namespace init (datapath/netns), which prepares the command's namespaces
// and becomes the command. main calls it first thing:
//
//	if runRole() { return }
func runRole() bool {
	return netns.RunInitRole()
}
