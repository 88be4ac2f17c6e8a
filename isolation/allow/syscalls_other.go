//go:build !amd64

// Architectures without a syscall table yet: the filter cannot be built, and
// Postfork says so. Registrations of unknown names would panic, so they are
// accepted and ignored here.

package allow

// AuditArch is zero: no filter for this architecture.
const AuditArch = 0

// AuditArchName names the missing table in messages.
const AuditArchName = "unsupported architecture"

// syscallNumbers is empty: see syscalls_amd64.go for what to add.
var syscallNumbers = map[string]uint32{}
