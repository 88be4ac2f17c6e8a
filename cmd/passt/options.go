package main

import (
	"errors"

	"gopasst/datapath/config"
)

// parseOptions parses the command line for mode. (Placeholder: replaced by
// the full parser.)
func parseOptions(mode config.Mode, args []string) (*config.Config, error) {
	return nil, errors.New("options: not implemented yet")
}
