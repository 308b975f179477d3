// Package tpmdevtest gives tests real TPMs and a test EK manufacturer: an
// swtpm process manufactured by swtpm_setup with an EK certificate from a
// local CA kept in the test's temporary directory, and an EK CA that issues
// certificates shaped like real manufacturers' (empty subject, critical
// subjectAltName with only a directoryName of TPM manufacturer, model and
// version, the TCG EK-certificate EKU) for the simulator.
//
// Tests that need swtpm and do not find it fail when CI=true and skip
// otherwise, naming hack/install-deps.sh either way.
package tpmdevtest
