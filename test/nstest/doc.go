// Package nstest is the harness of gopasst's integration tests: network
// namespaces that play "the host", background processes that are always
// stopped and reaped, and pasta (gopasst's or Debian's) started inside them.
//
// # Theory of operation
//
// Integration tests run as root (CI runs `go test ./test/... -args -bin
// DIR`). Every test builds its own world and takes it down at t.Cleanup,
// also when it fails:
//
//   - NewHost creates a named network namespace (/run/netns/NAME, via
//     `ip netns add`) laid out as in perf.md "Method": lo up, a veth pair
//     with both ends inside (this kernel has no dummy interfaces), the
//     benchmarking addresses 198.18.0.2/24 and 2001:db8:9a55::2/64 on one
//     end, default routes via gateways nothing answers, so no packet can
//     leave the machine, and /etc/netns/NAME/resolv.conf, which
//     `ip netns exec` bind-mounts over /etc/resolv.conf.
//   - Commands run in a namespace through `ip netns exec` (Netns.Cmd); Go
//     code runs there on a thread that enters it and then dies (Netns.Do),
//     which is how tests open sockets in it: a socket keeps the namespace it
//     was created in, whatever goroutine uses it later.
//   - Background processes (Netns.Start, StartPasta) write their output to a
//     file, never a pipe (a pipe inherited by a grandchild would make
//     exec.Cmd.Wait hang). At cleanup each gets SIGTERM, then SIGKILL after
//     a timeout, and the descendants it leaves behind (pasta's spawned
//     command, for one) are killed by PID too: the test leaves no process.
//   - StartPasta starts pasta in a Host, attached to a namespace made by
//     `unshare --user --map-root-user --net -- sleep 600`, or spawning a
//     command, as root or as the unprivileged user gopasst-test (made by
//     test/setup), and waits until the namespace is configured.
//
// Every wait has a deadline; every command runs under a context with a
// timeout.
package nstest
