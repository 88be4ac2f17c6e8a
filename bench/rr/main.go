// The command line of the rr tool, shared by bench/cmd/rr and the bench
// harness (which runs itself as "bench rr ..." to need no second binary).

package rr

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

// Main runs the rr command with args (without the program name), writing
// the report to stdout and errors to stderr. It returns the exit status:
// 0 on success, 1 on a failed test, 2 on a usage error.
//
// Server: rr [-B ADDR] [-P PORT] [-lifetime D]
// Client: rr -c -H HOST [-P PORT] [-test tcp_rr|tcp_crr|udp_rr] [-l D] [-n N]
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rr", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := fs.Bool("c", false, "run the client (default: the server)")
	host := fs.String("H", "", "client: server address (literal, IPv6 may have %zone)")
	bind := fs.String("B", "", "server: listen address (default: all, dual-stack)")
	port := fs.Int("P", 12867, "TCP and UDP port")
	test := fs.String("test", TCPRR, "client: tcp_rr, tcp_crr or udp_rr")
	length := fs.Duration("l", 2*time.Second, "client: test length")
	count := fs.Int64("n", 0, "client: stop after this many transactions (0: no limit)")
	reqSize := fs.Int("Q", 1, "request size in bytes")
	respSize := fs.Int("R", 1, "response size in bytes")
	timeout := fs.Duration("timeout", time.Second, "client: bound on each connect, send and receive")
	lifetime := fs.Duration("lifetime", 30*time.Minute, "server: exit after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *port <= 0 || *port > 65535 {
		fmt.Fprintf(stderr, "rr: port %d out of range\n", *port)
		return 2
	}
	if *client {
		if *host == "" {
			fmt.Fprintln(stderr, "rr: -c needs -H HOST")
			return 2
		}
		r, err := RunClient(ClientOptions{
			Test: *test, Host: *host, Port: *port, Duration: *length, Count: *count,
			RequestSize: *reqSize, ResponseSize: *respSize, Timeout: *timeout,
		})
		if err != nil {
			fmt.Fprintf(stderr, "rr: %s to %s port %d: %v\n", *test, *host, *port, err)
			return 1
		}
		if err := r.Write(stdout); err != nil {
			fmt.Fprintf(stderr, "rr: %v\n", err)
			return 1
		}
		return 0
	}
	go func() {
		time.Sleep(*lifetime)
		fmt.Fprintf(stderr, "rr: server lifetime %v over\n", *lifetime)
		os.Exit(0)
	}()
	err := Serve(ServerOptions{Addr: *bind, Port: *port, RequestSize: *reqSize, ResponseSize: *respSize}, nil)
	fmt.Fprintf(stderr, "rr: server: %v\n", err)
	return 1
}
