// Package tpmsim opens the go-tpm-tools TPM 2.0 simulator (Microsoft's
// reference implementation, compiled in through cgo; it needs the OpenSSL
// headers, Debian's libssl-dev) as a tpmdev.Device of kind "simulated".
//
// It is a separate package so that binaries which never use the simulator do
// not link it. The simulator is for development and tests only: its seeds
// are in process memory, so keys do not survive the process, and the
// control plane refuses simulated TPMs in production.
//
// The simulator is a process-wide singleton: Open blocks until the previous
// simulated Device has been closed, so at most one exists at a time.
package tpmsim
