// Domain names in DNS wire format (RFC 1035 §3.1), uncompressed: the form
// DHCP option 81, DHCPv6 options 24 and 39 and the NDP DNSSL option carry.
// DHCP option 119 adds compression on top (package dhcp).
package header

import "errors"

// ErrDNSName: a name with an empty or over-long label, or longer than 255
// bytes on the wire.
var ErrDNSName = errors.New("header: bad domain name")

// PutDNSName writes name as a sequence of length-prefixed labels ending
// with the root label. A trailing dot is accepted; "" and "." encode the
// root alone.
//
// b: destination buffer; name: dotted domain name. Returns the bytes
// written, or ErrDNSName (malformed name) / ErrTruncated (b too short), in
// which case b may hold a partial name.
func PutDNSName(b []byte, name string) (int, error) {
	if len(name) > 0 && name[len(name)-1] == '.' {
		name = name[:len(name)-1]
	}
	n := 0
	for len(name) > 0 {
		l := 0
		for l < len(name) && name[l] != '.' {
			l++
		}
		if l == 0 || l > 63 {
			return n, ErrDNSName
		}
		if n+1+l > len(b) {
			return n, ErrTruncated
		}
		b[n] = byte(l)
		copy(b[n+1:], name[:l])
		n += 1 + l
		if l == len(name) {
			name = ""
		} else {
			name = name[l+1:]
			if name == "" { // "a..": empty label before the final dot
				return n, ErrDNSName
			}
		}
	}
	if n+1 > len(b) {
		return n, ErrTruncated
	}
	b[n] = 0
	n++
	if n > 255 {
		return n, ErrDNSName
	}
	return n, nil
}
