//go:build race

package tgsp

// raceEnabled lets the multi-GiB tests skip themselves under -race, where
// they would take many minutes; `make test` runs them in a separate pass
// without -race.
const raceEnabled = true
