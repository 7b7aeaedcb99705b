//go:build race

package main

// raceEnabled: the tests build the agent binary with -race too, which also
// reuses the packages this test binary was compiled from.
const raceEnabled = true
