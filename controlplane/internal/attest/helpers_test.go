package attest_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/google/go-tpm-tools/simulator"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/attest"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmdevtest"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

const (
	tenant = "acme"
	fleet  = "edge"
)

// tpmFixture is one real TPM (the simulator or an swtpm) with its AK, as
// an enrolled device would have it.
type tpmFixture struct {
	t      testing.TB
	kind   string
	device string
	dev    *tpmdev.Device
	ak     *tpmdev.Key
	akPub  []byte

	sim   *simulator.Simulator // simulator only
	swtpm *tpmdevtest.SWTPM    // swtpm only
}

// openSim starts a freshly manufactured simulator. It is a process-wide
// singleton: tests that use it do not run in parallel.
func openSim(t testing.TB, device string) *tpmFixture {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("start simulator: %v", err)
	}
	f := &tpmFixture{t: t, kind: wire.TPMKindSimulated, device: device, sim: sim,
		dev: tpmdev.New(sim, tpmdev.KindSimulated)}
	t.Cleanup(func() { _ = f.dev.Close() })
	f.loadAK()
	return f
}

func openSWTPM(t testing.TB, device string) *tpmFixture {
	t.Helper()
	s := tpmdevtest.StartSWTPM(t)
	f := &tpmFixture{t: t, kind: wire.TPMKindSWTPM, device: device, swtpm: s}
	f.dev = s.Open(t)
	f.loadAK()
	return f
}

func (f *tpmFixture) loadAK() {
	f.t.Helper()
	ak, err := f.dev.AK()
	if err != nil {
		f.t.Fatal(err)
	}
	f.ak, f.akPub = ak, ak.PublicArea()
	f.t.Cleanup(ak.Close)
}

// otherAK is a second restricted signing key in the same TPM: to the
// verifier it is another device's AK.
func (f *tpmFixture) otherAK() *tpmdev.Key {
	f.t.Helper()
	tmpl := tpmdev.AKTemplate()
	tmpl.ECCParameters.Point.XRaw = []byte("another device's attestation key")
	k, err := f.dev.CreatePrimary(tmpl)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(k.Close)
	return k
}

// extend extends a SHA-256 PCR: through go-tpm on the simulator, through
// tpm2-tools' tpm2_pcrextend on swtpm (as an operator would on a device).
func (f *tpmFixture) extend(pcr int, digest [sha256.Size]byte) {
	t := f.t
	t.Helper()
	if f.sim != nil {
		if err := legacy.PCRExtend(f.sim, tpmutil.Handle(pcr), legacy.AlgSHA256, digest[:], ""); err != nil {
			t.Fatalf("extend PCR %d: %v", pcr, err)
		}
		return
	}
	if _, err := exec.LookPath("tpm2_pcrextend"); err != nil {
		tpmdevtest.Missing(t, "tpm2_pcrextend (Debian package tpm2-tools)")
	}
	// swtpm serves one connection at a time: let go of ours (flushing the
	// AK, which a TPM without a resource manager would otherwise keep).
	f.ak.Close()
	_ = f.dev.Close()
	port := f.swtpm.Addr()[strings.LastIndexByte(f.swtpm.Addr(), ':')+1:]
	// tpm2-tss's swtpm TCTI also wants swtpm's control channel on TCP; the
	// command TCTI over a bash /dev/tcp bridge needs only the command port.
	tcti := fmt.Sprintf("cmd:bash -c 'exec 3<>/dev/tcp/127.0.0.1/%s; cat <&3 & p=$!; cat >&3; kill $p'", port)
	arg := strconv.Itoa(pcr) + ":sha256=" + fmt.Sprintf("%x", digest)
	if out, err := exec.Command("tpm2_pcrextend", "-T", tcti, arg).CombinedOutput(); err != nil {
		t.Fatalf("tpm2_pcrextend %s: %v\n%s", arg, err, out)
	}
	f.dev = f.swtpm.Open(t)
	f.loadAK()
}

// reboot power-cycles the TPM: the simulator resets, swtpm restarts on its
// state directory.
func (f *tpmFixture) reboot() {
	f.t.Helper()
	if f.sim != nil {
		// A TPM reset flushes transient objects: re-create the AK (the
		// same key, from the same template and seed).
		if err := f.sim.Reset(); err != nil {
			f.t.Fatal(err)
		}
		f.loadAK()
		return
	}
	f.ak.Close()
	_ = f.dev.Close()
	f.swtpm.Restart()
	f.dev = f.swtpm.Open(f.t)
	f.loadAK()
}

// quote answers challenge n with a quote by ak (nil: the fixture's AK).
func (f *tpmFixture) quote(n attest.Nonce, pcrs []int, ak *tpmdev.Key) wire.AttestEvidence {
	f.t.Helper()
	if ak == nil {
		ak = f.ak
	}
	q, err := f.dev.Quote(ak, legacy.AlgSHA256, pcrs, n.Value)
	if err != nil {
		f.t.Fatal(err)
	}
	ev := wire.AttestEvidence{
		Schema: wire.AttestEvidenceSchema, MsgID: "msg-" + n.ID, Device: f.device,
		ChallengeID: n.ID, Nonce: n.Value, Quote: q.Attest, Signature: q.Signature,
		PCRValues: make(map[int][]byte, len(q.PCRs)),
	}
	for i, v := range q.PCRs {
		ev.PCRValues[int(i)] = v
	}
	return ev
}

// pcrs reads the current values of the SHA-256 PCRs sel through a quote.
func (f *tpmFixture) pcrs(sel []int) map[int][]byte {
	f.t.Helper()
	return f.quote(attest.Nonce{Value: make([]byte, attest.NonceSize)}, sel, nil).PCRValues
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeClock is a settable clock.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.now = c.now.Add(d) }

func issue(t testing.TB, s attest.NonceStore, device string) attest.Nonce {
	t.Helper()
	n, err := s.Issue(context.Background(), tenant, device, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func codes(v wire.Verdict) []string {
	var out []string
	for _, r := range v.Reasons {
		out = append(out, r.Code)
	}
	return out
}

func reasonPCRs(v wire.Verdict) []int {
	var out []int
	for _, r := range v.Reasons {
		if r.PCR != nil {
			out = append(out, *r.PCR)
		}
	}
	slices.Sort(out)
	return out
}

// ---- synthetic TCG PC Client crypto-agile event logs ----

const (
	evPostCode                = 0x00000001
	evNoAction                = 0x00000003
	evSeparator               = 0x00000004
	evEFIVariableDriverConfig = 0x80000001
	evEFIBootServicesApp      = 0x80000003
)

type testEvent struct {
	pcr  uint32
	typ  uint32
	data []byte
	// digest overrides SHA-256(data) when set.
	digest *[sha256.Size]byte
}

func (e testEvent) sha256() [sha256.Size]byte {
	if e.digest != nil {
		return *e.digest
	}
	return sha256.Sum256(e.data)
}

// buildLog writes a crypto-agile log with SHA-1 and SHA-256 banks (SHA-1
// digests are filled with a constant: the verifier must skip that bank).
func buildLog(events []testEvent) []byte {
	le := binary.LittleEndian
	var spec []byte
	spec = append(spec, "Spec ID Event03\x00"...)
	spec = le.AppendUint32(spec, 0)      // platformClass
	spec = append(spec, 0, 2, 0, 2)      // version minor, major, errata, uintnSize
	spec = le.AppendUint32(spec, 2)      // numberOfAlgorithms
	spec = le.AppendUint16(spec, 0x0004) // SHA-1
	spec = le.AppendUint16(spec, 20)     //
	spec = le.AppendUint16(spec, 0x000b) // SHA-256
	spec = le.AppendUint16(spec, 32)     //
	spec = append(spec, 0)               // vendorInfoSize
	var b []byte
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, evNoAction)
	b = append(b, make([]byte, 20)...)
	b = le.AppendUint32(b, uint32(len(spec)))
	b = append(b, spec...)
	for _, e := range events {
		b = le.AppendUint32(b, e.pcr)
		b = le.AppendUint32(b, e.typ)
		b = le.AppendUint32(b, 2)
		b = le.AppendUint16(b, 0x0004)
		b = append(b, make([]byte, 20)...)
		b = le.AppendUint16(b, 0x000b)
		d := e.sha256()
		b = append(b, d[:]...)
		b = le.AppendUint32(b, uint32(len(e.data)))
		b = append(b, e.data...)
	}
	return b
}

// secureBootEvent is the UEFI_VARIABLE_DATA measurement of SecureBoot.
func secureBootEvent(enabled bool) testEvent {
	le := binary.LittleEndian
	guid := []byte{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c}
	name := utf16.Encode([]rune("SecureBoot"))
	var d []byte
	d = append(d, guid...)
	d = le.AppendUint64(d, uint64(len(name)))
	d = le.AppendUint64(d, 1)
	for _, c := range name {
		d = le.AppendUint16(d, c)
	}
	v := byte(0)
	if enabled {
		v = 1
	}
	d = append(d, v)
	return testEvent{pcr: 7, typ: evEFIVariableDriverConfig, data: d}
}

var _ io.Reader = constReader{}

// constReader yields the same bytes forever: MemoryNonces.Rand for the
// benchmark, which re-uses one quote.
type constReader struct{ b []byte }

func (r constReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.b[i%len(r.b)]
	}
	return len(p), nil
}
