package attest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Size limits of evidence. Anything larger is MALFORMED_EVIDENCE before it
// is parsed further.
const (
	// MaxEvidenceBytes bounds the JSON evidence message.
	MaxEvidenceBytes = 2 << 20
	// MaxEventLogBytes bounds the binary event log (real UEFI logs are
	// tens of kilobytes).
	MaxEventLogBytes = 1 << 20
	// maxQuoteBytes bounds a TPMS_ATTEST; a quote is ~150 bytes plus the
	// signer's name and extraData (at most 64 bytes each).
	maxQuoteBytes = 1024
	// maxSignatureBytes bounds a TPMT_SIGNATURE (an RSA-4096 one is 518).
	maxSignatureBytes = 1024
	maxIDBytes        = 128
)

// DeviceState is what the verifier remembers about a device between quotes:
// the TPM clock information of its last trusted quote. The caller stores it
// (JSON) and passes it back as Input.Prev.
type DeviceState struct {
	Clock           uint64    `json:"clock"` // TPM Clock, milliseconds
	ResetCount      uint32    `json:"reset_count"`
	RestartCount    uint32    `json:"restart_count"`
	FirmwareVersion uint64    `json:"firmware_version"`
	VerifiedAt      time.Time `json:"verified_at"`
}

// Input is everything one verification needs.
type Input struct {
	Tenant, Fleet, Device string
	// TPMKind is the kind recorded at enrollment (wire.TPMKind*), not the
	// one the device claims now.
	TPMKind string
	// AKPublic is the TPMT_PUBLIC of the AK recorded at enrollment.
	AKPublic []byte
	// Evidence is the wire.AttestEvidence JSON as received.
	Evidence []byte
	Policy   Policy
	// Baseline holds the device's baseline PCR values by index (nil when
	// none has been recorded yet).
	Baseline map[int][]byte
	// Prev is the state after the last trusted quote (nil: never trusted).
	Prev *DeviceState
	// Now is the verification time (zero: time.Now()).
	Now time.Time
}

// Result is the outcome of Verify.
type Result struct {
	Verdict wire.Verdict
	// State is the device state to store: Prev, or the new state when
	// StateChanged (only on a trusted verdict).
	State        *DeviceState
	StateChanged bool
	// Baseline is the baseline to store when BaselineRecorded (Input's
	// baseline plus the newly recorded values).
	Baseline         map[int][]byte
	BaselineRecorded bool
	// PCRs are the SHA-256 PCR values, set once they are proven to be what
	// the TPM quoted (check 6 passed), whatever the verdict.
	PCRs map[int][]byte
	// Boot holds what the event log says, when the device sent one.
	Boot *BootInfo
}

// BootInfo is what a replayed event log tells about the boot.
type BootInfo struct {
	Events int // records in the log, EV_NO_ACTION included
	// Replayed are the selected PCRs the log has events for and reproduces.
	Replayed []int
	// SecureBoot is the UEFI SecureBoot variable measured into PCR 7, when
	// the log has it and PCR 7 is selected and replays correctly.
	SecureBoot *bool
}

// Verifier verifies quotes against challenges from its NonceStore. It is
// safe for concurrent use.
type Verifier struct {
	nonces NonceStore
}

// NewVerifier returns a Verifier consuming nonces from nonces.
func NewVerifier(nonces NonceStore) *Verifier { return &Verifier{nonces: nonces} }

// evidence is wire.AttestEvidence with its binary fields parsed.
type evidence struct {
	wire.AttestEvidence
	quote *parsedQuote
	sig   *tpm2.TPMTSignature
	log   *eventLog
	// logErr is set for a well-formed log that cannot vouch for the
	// SHA-256 bank (errNoSHA256Bank).
	logErr error
}

// Verify verifies one piece of evidence; see the package documentation for
// the checks and their order. The error is non-nil only when verification
// could not be carried out (the nonce store failed, ctx ended); the Result
// must then be neither published nor stored.
func (v *Verifier) Verify(ctx context.Context, in Input) (Result, error) {
	now := in.Now
	if now.IsZero() {
		now = time.Now()
	}
	res := Result{
		State: in.Prev,
		Verdict: wire.Verdict{
			Schema: wire.VerdictSchema, Tenant: in.Tenant, Fleet: in.Fleet, Device: in.Device,
			TPMKind: in.TPMKind, EvidenceAt: now, VerdictAt: now,
		},
	}
	fail := func(code string, pcr int, format string, args ...any) {
		r := wire.VerdictReason{Code: code, Detail: fmt.Sprintf(format, args...)}
		if pcr >= 0 {
			r.PCR = &pcr
		}
		res.Verdict.Reasons = append(res.Verdict.Reasons, r)
	}
	finish := func() (Result, error) {
		res.Verdict.State = wire.VerdictTrusted
		if len(res.Verdict.Reasons) > 0 {
			res.Verdict.State = wire.VerdictUntrusted
		}
		return res, nil
	}

	// 1. Our own inputs; fail closed.
	if in.TPMKind == wire.TPMKindNone || len(in.AKPublic) == 0 {
		fail(wire.ReasonNotAttestable, -1, "device enrolled without a TPM attestation key")
		return finish()
	}
	pol, err := in.Policy.compile()
	if err != nil {
		fail(wire.ReasonPCRPolicy, -1, "invalid fleet attestation policy: %v", err)
		return finish()
	}
	ak, err := parseAK(in.AKPublic)
	if err != nil {
		fail(wire.ReasonNotAttestable, -1, "enrolled AK unusable: %v", err)
		return finish()
	}

	// 2. Well-formed evidence.
	ev, err := parseEvidence(in.Evidence, in.Device)
	if err != nil {
		fail(wire.ReasonMalformed, -1, "%v", err)
		return finish()
	}
	if ev.Error != "" {
		fail(wire.ReasonDeviceError, -1, "device could not quote: %.200s", ev.Error)
		return finish()
	}

	// 3. TPM kind.
	if !slices.Contains(pol.kinds, in.TPMKind) {
		fail(wire.ReasonTPMKindRefused, -1, "TPM kind %q is not allowed by the fleet policy", in.TPMKind)
		return finish()
	}

	// 4. Nonce: issued to this device, unexpired, single use.
	issuedAt, err := v.nonces.Consume(ctx, in.Tenant, in.Device, ev.ChallengeID, ev.Nonce)
	if err != nil {
		code, ok := ReasonForNonceError(err)
		if !ok {
			return Result{}, fmt.Errorf("consume nonce: %w", err)
		}
		fail(code, -1, "challenge %.64q: %v", ev.ChallengeID, err)
		return finish()
	}
	res.Verdict.NonceAgeMS = max(now.Sub(issuedAt).Milliseconds(), 0)

	// 5. Signature by the enrolled AK; only now is the quote believed.
	if err := ak.verify(ev.Quote, ev.sig); err != nil {
		fail(wire.ReasonBadSignature, -1, "%v", err)
		return finish()
	}
	att, info := ev.quote.attest, ev.quote.info
	if subtle.ConstantTimeCompare(att.ExtraData.Buffer, ev.Nonce) != 1 {
		fail(wire.ReasonNonceUnknown, -1, "the quote is not over the challenge nonce (an old quote)")
		return finish()
	}
	res.Verdict.PCRDigest = hex.EncodeToString(info.PCRDigest.Buffer)

	// 6. The quoted selection is the policy's and the values are the quoted ones.
	quoted, err := quotedSelection(info)
	if err != nil {
		fail(wire.ReasonPCRDigest, -1, "quote selection: %v", err)
		return finish()
	}
	if !slices.Equal(quoted, pol.pcrs) {
		fail(wire.ReasonPCRDigest, -1, "quote covers SHA-256 PCRs %v, the policy selects %v", quoted, pol.pcrs)
		return finish()
	}
	if got := slices.Sorted(maps.Keys(ev.PCRValues)); !slices.Equal(got, pol.pcrs) {
		fail(wire.ReasonPCRDigest, -1, "values reported for PCRs %v, quote covers %v", got, pol.pcrs)
		return finish()
	}
	h := ak.hash.New()
	for _, i := range pol.pcrs {
		h.Write(ev.PCRValues[i])
	}
	if !bytes.Equal(h.Sum(nil), info.PCRDigest.Buffer) {
		fail(wire.ReasonPCRDigest, -1, "the reported PCR values do not hash to the quoted digest")
		return finish()
	}
	res.PCRs = ev.PCRValues

	// From here on every check runs, so the verdict lists every problem.

	// 7. TPM clock and counters against the last trusted quote.
	ci := att.ClockInfo
	if p := in.Prev; p != nil {
		switch {
		case ci.ResetCount < p.ResetCount:
			fail(wire.ReasonClockRollback, -1, "TPM reset count %d < %d of the last trusted quote", ci.ResetCount, p.ResetCount)
		case ci.ResetCount > p.ResetCount:
			res.Verdict.Reboot = true
		case ci.RestartCount < p.RestartCount:
			fail(wire.ReasonClockRollback, -1, "TPM restart count %d < %d of the last trusted quote", ci.RestartCount, p.RestartCount)
		case ci.Clock < p.Clock:
			fail(wire.ReasonClockRollback, -1, "TPM clock %d ms < %d ms of the last trusted quote", ci.Clock, p.Clock)
		}
	}

	// 8. PCR policy, on every selected PCR (not only those the log covers).
	var needBaseline []int
	for _, i := range pol.pcrs {
		val := ev.PCRValues[i]
		if allow, ok := pol.golden[i]; ok {
			if !slices.Contains(allow, [sha256.Size]byte(val)) {
				fail(wire.ReasonPCRPolicy, i, "PCR %d = %x is not in the golden allow-list", i, val)
			}
			continue
		}
		base, ok := in.Baseline[i]
		switch {
		case !ok:
			needBaseline = append(needBaseline, i)
		case !bytes.Equal(base, val):
			fail(wire.ReasonPCRPolicy, i, "PCR %d = %x differs from the baseline %x", i, val, base)
		}
	}

	// 9. Event log replay.
	switch {
	case ev.logErr != nil:
		fail(wire.ReasonEventLog, -1, "%v", ev.logErr)
	case ev.log != nil:
		boot := &BootInfo{Events: len(ev.log.events)}
		replayed := ev.log.replay()
		for _, i := range pol.pcrs {
			r, ok := replayed[i]
			if !ok {
				continue // no events: the PCR policy above still applies
			}
			if !bytes.Equal(r[:], ev.PCRValues[i]) {
				fail(wire.ReasonEventLog, i, "replaying the event log gives PCR %d = %x, the TPM quoted %x", i, r, ev.PCRValues[i])
				continue
			}
			boot.Replayed = append(boot.Replayed, i)
		}
		if slices.Contains(boot.Replayed, 7) {
			if on, found := ev.log.secureBoot(); found {
				boot.SecureBoot = &on
			}
		}
		res.Boot = boot
	}

	if len(res.Verdict.Reasons) == 0 {
		res.State = &DeviceState{Clock: ci.Clock, ResetCount: ci.ResetCount, RestartCount: ci.RestartCount,
			FirmwareVersion: att.FirmwareVersion, VerifiedAt: now}
		res.StateChanged = true
		if len(needBaseline) > 0 {
			res.Baseline = maps.Clone(in.Baseline)
			if res.Baseline == nil {
				res.Baseline = make(map[int][]byte, len(needBaseline))
			}
			for _, i := range needBaseline {
				res.Baseline[i] = bytes.Clone(ev.PCRValues[i])
			}
			res.BaselineRecorded = true
		}
	}
	return finish()
}

// parseEvidence decodes and bounds-checks the evidence message.
func parseEvidence(raw []byte, device string) (*evidence, error) {
	if len(raw) > MaxEvidenceBytes {
		return nil, fmt.Errorf("evidence of %d bytes exceeds %d", len(raw), MaxEvidenceBytes)
	}
	ev := &evidence{}
	if err := json.Unmarshal(raw, &ev.AttestEvidence); err != nil {
		return nil, fmt.Errorf("decode evidence: %v", err)
	}
	if ev.Schema != wire.AttestEvidenceSchema {
		return nil, fmt.Errorf("evidence schema %.64q, want %q", ev.Schema, wire.AttestEvidenceSchema)
	}
	if ev.Device != device {
		return nil, fmt.Errorf("evidence names device %.64q, it came from %q", ev.Device, device)
	}
	if ev.Error != "" {
		return ev, nil
	}
	switch {
	case ev.ChallengeID == "" || len(ev.ChallengeID) > maxIDBytes:
		return nil, errors.New("missing or oversized challenge id")
	case len(ev.Nonce) != NonceSize:
		return nil, fmt.Errorf("nonce of %d bytes, want %d", len(ev.Nonce), NonceSize)
	case len(ev.Quote) == 0 || len(ev.Quote) > maxQuoteBytes:
		return nil, fmt.Errorf("quote of %d bytes", len(ev.Quote))
	case len(ev.Signature) == 0 || len(ev.Signature) > maxSignatureBytes:
		return nil, fmt.Errorf("signature of %d bytes", len(ev.Signature))
	case len(ev.PCRValues) == 0 || len(ev.PCRValues) > NumPCRs:
		return nil, fmt.Errorf("%d PCR values", len(ev.PCRValues))
	case len(ev.EventLog) > MaxEventLogBytes:
		return nil, fmt.Errorf("event log of %d bytes exceeds %d", len(ev.EventLog), MaxEventLogBytes)
	}
	for i, v := range ev.PCRValues {
		if i < 0 || i >= NumPCRs || len(v) != sha256.Size {
			return nil, fmt.Errorf("PCR value for index %d has %d bytes", i, len(v))
		}
	}
	var err error
	if ev.quote, err = parseQuote(ev.Quote); err != nil {
		return nil, err
	}
	if ev.sig, err = parseSignature(ev.Signature); err != nil {
		return nil, err
	}
	if len(ev.EventLog) > 0 {
		ev.log, err = parseEventLog(ev.EventLog)
		switch {
		case errors.Is(err, errNoSHA256Bank):
			ev.log, ev.logErr = nil, err
		case err != nil:
			return nil, fmt.Errorf("event log: %v", err)
		}
	}
	return ev, nil
}

// quotedSelection returns the PCR indices of the quote's single SHA-256
// selection.
func quotedSelection(info *tpm2.TPMSQuoteInfo) ([]int, error) {
	sels := info.PCRSelect.PCRSelections
	if len(sels) != 1 || sels[0].Hash != tpm2.TPMAlgSHA256 {
		return nil, errors.New("not exactly one SHA-256 bank")
	}
	var out []int
	for byteIdx, b := range sels[0].PCRSelect {
		for bit := range 8 {
			if b&(1<<bit) != 0 {
				out = append(out, 8*byteIdx+bit)
			}
		}
	}
	return out, nil
}
