//go:build race

package gauntlet

const raceEnabled = true
