//go:build !notpmsim

package agent

import (
	"fmt"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmsim"
)

// openSimulator starts the in-process TPM simulator (tpm.simulator, for
// development and the demo; refused in production). The .deb builds leave
// it out with -tags notpmsim: it is C code that links OpenSSL's libcrypto.
func openSimulator(c *Config) (*tpmdev.Device, error) {
	if c.TPM.SimulatorSeed == nil {
		return tpmsim.Open(nil)
	}
	sim, err := simulator.GetWithFixedSeedInsecure(*c.TPM.SimulatorSeed)
	if err != nil {
		return nil, fmt.Errorf("start tpm simulator: %w", err)
	}
	return tpmdev.New(sim, tpmdev.KindSimulated), nil
}
