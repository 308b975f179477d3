//go:build race

package dpsgd

// raceDetector is true in -race builds; see backendConfig.
const raceDetector = true
