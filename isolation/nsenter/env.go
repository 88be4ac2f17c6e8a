// The environment variables the constructor answers to, shared by the cgo
// and the stub builds.

package nsenter

const (
	// EnvUserNS names the user namespace file to join at start.
	EnvUserNS = "GOPASST_NSENTER_USERNS"
	// EnvCaps is the hexadecimal capability mask to narrow to at start.
	EnvCaps = "GOPASST_CAPS"
	// EnvFDTable is the number of descriptors to size the descriptor
	// table for at start (decimal), while the process has one thread.
	EnvFDTable = "GOPASST_FDTABLE"
)
