// The one unsafe conversion of this package, kept apart for review.

package netns

import "unsafe"

// unsafePointer returns p as an unsafe.Pointer, to read kernel structures
// (inotify events, siginfo) out of byte buffers.
func unsafePointer(p *byte) unsafe.Pointer { return unsafe.Pointer(p) }
