//go:build !race

package tgsp

const raceEnabled = false
