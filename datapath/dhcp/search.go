// Option 119, the domain search list (RFC 3397): domain names in DNS wire
// format with RFC 1035 §4.1.4 compression, pointers being offsets into the
// option's (concatenated) data.
package dhcp

import (
	"strings"

	"gopasst/datapath/config"
)

// maxSuffixes bounds the table of name suffixes already written; names
// beyond it are simply not compressed against.
const maxSuffixes = 64

// putSearch encodes up to config.MaxSearch names, compressing each against
// the suffixes already written (case-insensitively, as DNS compares
// names). Names that are not valid domain names are skipped.
//
// b: destination, at least 5 × 255 bytes; names: the search list.
// Returns the length written.
func putSearch(b []byte, names []string) int {
	var suffixOff [maxSuffixes]int
	var suffix [maxSuffixes]string
	ns := 0
	n := 0
	for i, name := range names {
		if i == config.MaxSearch {
			break
		}
		name = strings.TrimSuffix(name, ".")
		if !validName(name) {
			continue
		}
		start, startNS := n, ns
		for {
			if name == "" {
				b[n] = 0
				n++
				break
			}
			ptr := -1
			for j := 0; j < ns; j++ {
				if strings.EqualFold(suffix[j], name) {
					ptr = suffixOff[j]
					break
				}
			}
			if ptr >= 0 {
				b[n], b[n+1] = 0xc0|byte(ptr>>8), byte(ptr)
				n += 2
				break
			}
			if ns < maxSuffixes && n < 0x3fff {
				suffix[ns], suffixOff[ns] = name, n
				ns++
			}
			l := strings.IndexByte(name, '.')
			rest := ""
			if l < 0 {
				l = len(name)
			} else {
				rest = name[l+1:]
			}
			b[n] = byte(l)
			copy(b[n+1:], name[:l])
			n += 1 + l
			name = rest
		}
		if n-start > 255 { // cannot happen for a valid name, but be safe
			n, ns = start, startNS
		}
	}
	return n
}

// validName reports whether name (without a trailing dot) has labels of 1
// to 63 bytes and fits in 255 bytes on the wire. The root ("") is not a
// useful search domain and is refused.
func validName(name string) bool {
	if name == "" || len(name)+2 > 255 {
		return false
	}
	l := 0
	for i := 0; i < len(name); i++ {
		if name[i] == '.' {
			if l == 0 {
				return false
			}
			l = 0
			continue
		}
		l++
		if l > 63 {
			return false
		}
	}
	return l > 0
}
