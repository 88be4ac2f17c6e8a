//go:build amd64.v3

package main

// buildLevel is the amd64 micro-architecture level this binary was built for.
const buildLevel = "v3"
