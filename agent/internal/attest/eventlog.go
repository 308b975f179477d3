package attest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultEventLogPath is where Linux exposes the firmware's measured-boot
// log of the first TPM.
const DefaultEventLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// EventLogPathFor returns the measured-boot log of the TPM behind a kernel
// device (/dev/tpmrmN or /dev/tpmN → /sys/kernel/security/tpmN/…), or
// DefaultEventLogPath for a name it does not recognise.
func EventLogPathFor(device string) string {
	base := filepath.Base(device)
	n, ok := strings.CutPrefix(base, "tpmrm")
	if !ok {
		n, ok = strings.CutPrefix(base, "tpm")
	}
	if !ok || n == "" || strings.Trim(n, "0123456789") != "" {
		return DefaultEventLogPath
	}
	return "/sys/kernel/security/tpm" + n + "/binary_bios_measurements"
}

// eventLog reads the configured log, or returns nil when there is none or
// it cannot be used. Each kind of problem is logged once per Run: the log
// is static after boot, so the same failure would repeat on every answer.
func (r *Responder) eventLog() []byte {
	path := r.cfg.EventLogPath
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		// Normal on platforms without one (a Jetson's fTPM).
		r.reportOnce("absent", "no measured-boot event log on this platform; quotes are sent without one", path, nil)
		return nil
	}
	if err != nil {
		r.reportOnce("unreadable", "measured-boot event log unreadable; quotes are sent without it", path, err)
		return nil
	}
	defer f.Close()
	// securityfs reports size 0, so the bound is enforced while reading.
	b, err := io.ReadAll(io.LimitReader(f, r.cfg.MaxEventLog+1))
	switch {
	case err != nil:
		r.reportOnce("unreadable", "measured-boot event log unreadable; quotes are sent without it", path, err)
		return nil
	case int64(len(b)) > r.cfg.MaxEventLog:
		r.reportOnce("too large", "measured-boot event log larger than the limit; quotes are sent without it", path,
			fmt.Errorf("more than %d bytes", r.cfg.MaxEventLog))
		return nil
	case len(b) == 0:
		return nil
	}
	return b
}

func (r *Responder) reportOnce(kind, msg, path string, err error) {
	if r.reported[kind] {
		return
	}
	r.reported[kind] = true
	if err == nil {
		r.log.Info(msg, "path", path)
		return
	}
	r.log.Warn(msg, "path", path, "err", err)
}
