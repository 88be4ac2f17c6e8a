// A command-line scanner with the semantics of GNU getopt_long() as the C
// original calls it (optstring starting with "+"): short options cluster
// ("-46", "-t80"), an option's required argument is the rest of its cluster
// or the next word whatever it looks like, long options take "--opt=value"
// or "--opt value" and may be abbreviated to any unambiguous prefix, "--"
// ends the options, and scanning stops at the first non-option word (pasta
// runs it as a command). Error texts follow glibc's.

package main

import (
	"fmt"
	"strconv"
	"strings"
)

// esc escapes what the user typed for an error line: control characters
// and non-UTF-8 bytes as Go escapes, so that an error is always one line.
func esc(s string) string {
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// argKind says whether an option takes an argument.
type argKind uint8

const (
	noArg argKind = iota
	requiredArg
)

// optDef describes one option: its short letter (0 if none), its long
// names (the first is canonical; more are aliases), and whether it takes
// an argument. The meaning is given by its entry in the option table.
type optDef struct {
	short byte
	long  []string
	arg   argKind
}

// getopt scans args against defs.
type getopt struct {
	defs    []*optDef
	args    []string
	next    int    // index of the next word of args
	cluster string // rest of a short option cluster being scanned
	prog    string // program name for error texts
}

// scanned is one option found by the scanner.
type scanned struct {
	def   *optDef
	name  string // as named in messages: "-m" or "--mtu" (full name)
	value string
}

// rest returns the words after the options: the operands.
func (g *getopt) rest() []string { return g.args[g.next:] }

// scan returns the next option, or ok=false at the end of the options.
func (g *getopt) scan() (opt scanned, ok bool, err error) {
	if g.cluster == "" {
		if g.next >= len(g.args) {
			return scanned{}, false, nil
		}
		w := g.args[g.next]
		switch {
		case w == "--":
			g.next++
			return scanned{}, false, nil
		case len(w) < 2 || w[0] != '-':
			return scanned{}, false, nil // first operand: stop
		case strings.HasPrefix(w, "--"):
			g.next++
			return g.long(w[2:])
		}
		g.cluster = w[1:]
		g.next++
	}

	c := g.cluster[0]
	g.cluster = g.cluster[1:]
	var def *optDef
	for _, d := range g.defs {
		if d.short == c {
			def = d
			break
		}
	}
	if def == nil {
		return scanned{}, false, fmt.Errorf("%s: invalid option -- '%s'", g.prog, esc(string([]byte{c})))
	}
	opt = scanned{def: def, name: "-" + string(c)}
	if def.arg == requiredArg {
		switch {
		case g.cluster != "":
			opt.value, g.cluster = g.cluster, ""
		case g.next < len(g.args):
			opt.value = g.args[g.next]
			g.next++
		default:
			return scanned{}, false, fmt.Errorf("%s: option requires an argument -- '%s'", g.prog, esc(string([]byte{c})))
		}
	}
	return opt, true, nil
}

// long resolves one long option (without its "--"), exact name first, then
// a unique prefix; prefixes naming aliases of one option are not
// ambiguous, as in glibc.
func (g *getopt) long(word string) (scanned, bool, error) {
	name, value, hasValue := strings.Cut(word, "=")
	var def *optDef
	var full string
	var candidates []string
	ambiguous := false
	for _, d := range g.defs {
		for _, l := range d.long {
			if l == name {
				def, full, ambiguous = d, l, false
				goto found
			}
			if strings.HasPrefix(l, name) && name != "" {
				candidates = append(candidates, "'--"+l+"'")
				if def == nil {
					def, full = d, l
				} else if def != d {
					ambiguous = true
				}
			}
		}
	}
	if def == nil {
		return scanned{}, false, fmt.Errorf("%s: unrecognized option '--%s'", g.prog, esc(name))
	}
	if ambiguous {
		return scanned{}, false, fmt.Errorf("%s: option '--%s' is ambiguous; possibilities: %s",
			g.prog, esc(name), strings.Join(candidates, " "))
	}
found:
	opt := scanned{def: def, name: "--" + full}
	switch {
	case def.arg == noArg && hasValue:
		return scanned{}, false, fmt.Errorf("%s: option '--%s' doesn't allow an argument", g.prog, full)
	case def.arg == requiredArg && hasValue:
		opt.value = value
	case def.arg == requiredArg && g.next < len(g.args):
		opt.value = g.args[g.next]
		g.next++
	case def.arg == requiredArg:
		return scanned{}, false, fmt.Errorf("%s: option '--%s' requires an argument", g.prog, full)
	}
	return opt, true, nil
}
