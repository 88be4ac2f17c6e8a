// Command rr is a request/response benchmark with neper's definitions
// (tcp_rr, tcp_crr, udp_rr) and output fields, for machines without neper.
// See package gopasst/bench/rr for the definitions.
//
//	rr -P 5211 &                              # server, TCP and UDP
//	rr -c -H 127.0.0.1 -P 5211 -test tcp_crr -l 2s
package main

import (
	"os"

	"gopasst/bench/rr"
)

// main runs the tool with the process's arguments and exits with its status.
func main() {
	os.Exit(rr.Main(os.Args[1:], os.Stdout, os.Stderr))
}
