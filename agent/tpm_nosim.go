//go:build notpmsim

package agent

import (
	"errors"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
)

// errNoSimulator is why tpm.simulator fails in a build without the
// simulator (the packaged agent: its C code would add a libcrypto
// dependency to every device for a development-only feature).
var errNoSimulator = errors.New("tpm.simulator: this build has no TPM simulator (built with -tags notpmsim, as the .deb packages are); use tpm.swtpm for a software TPM")

func openSimulator(*Config) (*tpmdev.Device, error) { return nil, errNoSimulator }
