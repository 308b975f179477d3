package agent

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
)

// openTPM opens the TPM the config selects.
func openTPM(c *Config) (*tpmdev.Device, error) {
	switch {
	case c.TPM.Simulator:
		return openSimulator(c)
	case c.TPM.SWTPM != "":
		d, err := tpmdev.OpenSWTPM(c.TPM.SWTPM)
		if err != nil {
			return nil, err
		}
		// No resource manager: what a killed predecessor left loaded would
		// fill the TPM's few object slots.
		if err := d.FlushTransients(); err != nil {
			_ = d.Close()
			return nil, fmt.Errorf("swtpm %s: %w", c.TPM.SWTPM, err)
		}
		return d, nil
	default:
		d, err := tpmdev.OpenDevice(c.TPMDevice())
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w (no TPM here? set tpm.swtpm to an swtpm address; tpm.none: true if the fleet allows devices without a TPM; or, for development only, tpm.simulator: true)", err)
		}
		return d, err
	}
}
