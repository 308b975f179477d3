//go:build !race

package dpsgd

const raceDetector = false
