// Package qemu is the harness of the tests that boot a real virtual machine
// on passt: it builds a small initramfs from busybox-static and the
// installed kernel's virtio network modules, starts qemu-system-x86_64 on
// passt's UNIX domain socket, and reads what the guest prints on its serial
// console.
//
// # Theory of operation
//
// The guest is a kernel from /boot (FindKernel) and an initramfs made by
// BuildInitramfs: busybox, an /init script (guest/init) and udhcpc's
// default.script (guest/udhcpc.script), and the modules virtio_pci and
// virtio_net need with their dependencies (Debian's kernel builds them as
// modules), in load order. /init loads them, gets a DHCP lease on eth0,
// pings, downloads http://GATEWAY:PORT/blob with wget and prints what it
// found as "GUEST-..." lines, then powers the machine off. The test's
// parameters travel on the kernel command line (gopasst.port=...), which
// the guest reads from /proc/cmdline.
//
// qemu runs under TCG (-accel tcg: guests hang under nested KVM on the
// machines this runs on) with one vCPU, so that passt keeps the second core.
// qemu 7.2's stream netdev connects once, at start-up, and stays
// unconnected without a word if nothing listens yet: start it only after
// passt listens (SocketListening). Start makes qemu a background process of
// the test (test/nstest), killed by PID and reaped at cleanup; its serial
// console goes to a file that Watch polls until the guest is done, fails,
// or the time is up.
package qemu
