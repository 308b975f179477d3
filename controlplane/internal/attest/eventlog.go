package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf16"
)

// TCG PC Client Platform Firmware Profile constants.
const (
	evNoAction                = 0x00000003
	evEFIVariableDriverConfig = 0x80000001
	algSHA1                   = 0x0004
	algSHA256                 = 0x000b
	maxLogAlgorithms          = 16
	maxLogDigestSize          = 64
	sha1Size                  = 20
)

var (
	specIDSignature          = []byte("Spec ID Event03\x00")
	startupLocalitySignature = []byte("StartupLocality\x00")
	// EFI_GLOBAL_VARIABLE, 8BE4DF61-93CA-11D2-AA0D-00E098032B8C, in its
	// mixed-endian EFI_GUID encoding.
	efiGlobalVariable = []byte{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c}
)

// errNoSHA256Bank is returned by parseEventLog for a well-formed log that
// has no SHA-256 digests (a SHA-1-only log): it cannot vouch for the bank
// we quote.
var errNoSHA256Bank = errors.New("event log has no SHA-256 digests")

// logEvent is one TCG_PCR_EVENT2 record, reduced to its SHA-256 digest.
type logEvent struct {
	pcr    int
	typ    uint32
	digest [sha256.Size]byte
	data   []byte
}

type eventLog struct {
	events   []logEvent
	locality byte // StartupLocality; initial value of PCR 0's last byte
}

// logReader reads little-endian fields and remembers the first error, so a
// truncated log can never index out of range.
type logReader struct {
	b   []byte
	err error
}

func (r *logReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errors.New("event log truncated")
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *logReader) u8() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *logReader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *logReader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *logReader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// parseEventLog parses a crypto-agile TCG PC Client binary event log.
func parseEventLog(b []byte) (*eventLog, error) {
	r := &logReader{b: b}
	// TCG_PCR_EVENT (SHA-1 format) carrying TCG_EfiSpecIDEvent.
	pcr, typ := r.u32(), r.u32()
	r.take(sha1Size)
	spec := &logReader{b: r.take(int(r.u32()))}
	if r.err != nil {
		return nil, r.err
	}
	if pcr != 0 || typ != evNoAction || !bytes.HasPrefix(spec.b, specIDSignature) {
		return nil, errors.New("event log does not start with a Spec ID Event03 header (not a crypto-agile log)")
	}
	spec.take(len(specIDSignature))
	spec.take(4 + 4) // platformClass, specVersionMinor/Major, specErrata, uintnSize
	nAlgs := spec.u32()
	if nAlgs == 0 || nAlgs > maxLogAlgorithms {
		return nil, fmt.Errorf("event log lists %d digest algorithms", nAlgs)
	}
	sizes := make(map[uint16]int, nAlgs)
	for range nAlgs {
		alg, size := spec.u16(), int(spec.u16())
		if size == 0 || size > maxLogDigestSize {
			return nil, fmt.Errorf("event log digest size %d for algorithm %#x", size, alg)
		}
		if _, dup := sizes[alg]; dup {
			return nil, fmt.Errorf("event log lists algorithm %#x twice", alg)
		}
		sizes[alg] = size
	}
	spec.take(int(spec.u8())) // vendorInfo
	if spec.err != nil {
		return nil, fmt.Errorf("spec id event: %w", spec.err)
	}
	if s, ok := sizes[algSHA256]; ok && s != sha256.Size {
		return nil, fmt.Errorf("event log SHA-256 digest size %d", s)
	}

	log := &eventLog{}
	for len(r.b) > 0 {
		var ev logEvent
		ev.pcr, ev.typ = int(r.u32()), r.u32()
		count := r.u32()
		if r.err == nil && (count == 0 || count > nAlgs) {
			return nil, fmt.Errorf("event %d has %d digests", len(log.events), count)
		}
		have256 := false
		for range count {
			alg := r.u16()
			size, ok := sizes[alg]
			if r.err == nil && !ok {
				return nil, fmt.Errorf("event %d uses algorithm %#x the header does not list", len(log.events), alg)
			}
			d := r.take(size)
			if alg == algSHA256 && d != nil {
				copy(ev.digest[:], d)
				have256 = true
			}
		}
		ev.data = r.take(int(r.u32()))
		if r.err != nil {
			return nil, fmt.Errorf("event %d: %w", len(log.events), r.err)
		}
		if ev.pcr < 0 || ev.pcr >= NumPCRs {
			return nil, fmt.Errorf("event %d extends PCR %d", len(log.events), ev.pcr)
		}
		if _, ok := sizes[algSHA256]; ok && !have256 {
			return nil, fmt.Errorf("event %d lacks its SHA-256 digest", len(log.events))
		}
		if ev.typ == evNoAction && ev.pcr == 0 && bytes.HasPrefix(ev.data, startupLocalitySignature) &&
			len(ev.data) == len(startupLocalitySignature)+1 {
			log.locality = ev.data[len(startupLocalitySignature)]
		}
		log.events = append(log.events, ev)
	}
	if _, ok := sizes[algSHA256]; !ok {
		return nil, errNoSHA256Bank
	}
	return log, nil
}

// replay extends the SHA-256 bank as the firmware did and returns the
// resulting value of every PCR that has at least one measured event.
func (l *eventLog) replay() map[int][sha256.Size]byte {
	pcrs := make(map[int][sha256.Size]byte)
	for _, ev := range l.events {
		if ev.typ == evNoAction { // not extended (TCG PFP §9.4.5)
			continue
		}
		cur, ok := pcrs[ev.pcr]
		if !ok && ev.pcr == 0 {
			cur[sha256.Size-1] = l.locality
		}
		h := sha256.New()
		h.Write(cur[:])
		h.Write(ev.digest[:])
		h.Sum(cur[:0])
		pcrs[ev.pcr] = cur
	}
	return pcrs
}

// secureBoot returns the value of the UEFI SecureBoot variable as measured
// into PCR 7 (EV_EFI_VARIABLE_DRIVER_CONFIG), and whether it was found. The
// event's data is believed only when its digest is the hash of that data,
// which TCG PFP prescribes for this event type; the caller must also have
// checked PCR 7's replay against the quote.
func (l *eventLog) secureBoot() (enabled, found bool) {
	name := utf16.Encode([]rune("SecureBoot"))
	for _, ev := range l.events {
		if ev.pcr != 7 || ev.typ != evEFIVariableDriverConfig || sha256.Sum256(ev.data) != ev.digest {
			continue
		}
		r := &logReader{b: ev.data}
		guid := r.take(16)
		nameLen, dataLen := r.u64(), r.u64()
		if r.err != nil || nameLen != uint64(len(name)) || dataLen > uint64(len(r.b)) {
			continue
		}
		rawName := r.take(2 * len(name))
		val := r.take(int(dataLen))
		if r.err != nil || !bytes.Equal(guid, efiGlobalVariable) {
			continue
		}
		match := true
		for i, c := range name {
			if binary.LittleEndian.Uint16(rawName[2*i:]) != c {
				match = false
				break
			}
		}
		if match {
			enabled, found = len(val) == 1 && val[0] == 1, true
		}
	}
	return enabled, found
}
