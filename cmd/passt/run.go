package main

import (
	"fmt"
	"os"

	"gopasst/datapath/config"
)

// run is everything after the optimised re-exec: options, the isolation
// stages, set-up and the event loop. It returns the exit status.
func run(mode config.Mode, args []string) int {
	cfg, err := parseOptions(mode, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = cfg
	fmt.Fprintln(os.Stderr, "datapath: not implemented yet")
	return 1
}
