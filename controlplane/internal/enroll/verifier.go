package enroll

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base32"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/google/go-tpm/legacy/tpm2/credactivation"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev/enrollbind"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// secretSize is the size of the credential secret (go-tpm recommends 32
// bytes; it must not exceed the EK name algorithm's digest size).
const secretSize = 32

// DefaultSessionTTL bounds the time between Begin and Finish.
const DefaultSessionTTL = 2 * time.Minute

// Config configures a Verifier.
type Config struct {
	// EKRoots are the TPM manufacturers' root CAs; EKIntermediates their
	// issuing CAs (EK certificates in NV rarely come with their chain).
	EKRoots         *x509.CertPool
	EKIntermediates *x509.CertPool
	// AllowEKWithoutCert accepts a TPM whose NV holds no EK certificate
	// (some firmware TPMs publish theirs online only). The EK is then
	// trusted on first use; Facts.EKCertVerified says so. Default: refuse.
	AllowEKWithoutCert bool
	// AllowedKinds lists the TPM kinds Begin accepts (e.g. "hardware"; tests
	// add "swtpm" or "simulated"). Empty means only "hardware".
	AllowedKinds []string
	// Sessions stores pending sessions; default a MemorySessions.
	Sessions SessionStore
	// SessionTTL defaults to DefaultSessionTTL.
	SessionTTL time.Duration
	// Now and Rand default to time.Now and crypto/rand.Reader.
	Now  func() time.Time
	Rand io.Reader
}

// Verifier runs the two steps of TPM enrollment.
type Verifier struct {
	cfg Config
}

// NewVerifier checks cfg and fills its defaults.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.EKRoots == nil && !cfg.AllowEKWithoutCert {
		return nil, errors.New("enroll: no EK roots configured")
	}
	for _, k := range cfg.AllowedKinds {
		if k != KindHardware && k != KindSWTPM && k != KindSimulated {
			return nil, fmt.Errorf("enroll: TPM kind %q cannot be allowed here", k)
		}
	}
	if len(cfg.AllowedKinds) == 0 {
		cfg.AllowedKinds = []string{KindHardware}
	}
	if cfg.EKRoots == nil {
		cfg.EKRoots = x509.NewCertPool()
	}
	if cfg.EKIntermediates == nil {
		cfg.EKIntermediates = x509.NewCertPool()
	}
	if cfg.Sessions == nil {
		cfg.Sessions = &MemorySessions{Now: cfg.Now}
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	return &Verifier{cfg: cfg}, nil
}

// Facts are what a successful enrollment proved, for the caller to issue the
// certificate and record the device (EK and AK for later attestation).
type Facts struct {
	// Token is the request's token; consume it when issuing.
	Token   string
	TPMKind string
	CSR     *x509.CertificateRequest
	// TLSPublicKey is the key to certify (the CSR's key).
	TLSPublicKey *ecdsa.PublicKey
	// EKPublic is the EK's TPMT_PUBLIC; EKFingerprint is SHA-256 of its
	// SubjectPublicKeyInfo (stable across EK certificate renewals).
	EKPublic      []byte
	EKFingerprint [32]byte
	// EKCert is the EK certificate (DER) when one was sent and verified.
	EKCert         []byte
	EKCertVerified bool
	TPM            TPMInfo
	// AKPublic is the AK's TPMT_PUBLIC, AKName its TPM Name (nameAlg ‖
	// digest); quotes are verified against it.
	AKPublic []byte
	AKName   []byte
	// KEMPublic is the device's X-Wing public key for package key grants
	// (tgsp recipient encoding), checked to parse; nil when the request
	// had none. With TPM evidence it was bound into the certification.
	KEMPublic []byte
}

// checkKEMPublic accepts an absent key or one that parses as a tgsp
// recipient (X-Wing) public key.
func checkKEMPublic(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := tgsp.ParseRecipientPublicKeyBytes(b); err != nil {
		return fmt.Errorf("%w: kem_public is not an X-Wing public key in tgsp recipient encoding: %v", ErrMalformedRequest, err)
	}
	return nil
}

func (v *Verifier) kindAllowed(k string) bool { return slices.Contains(v.cfg.AllowedKinds, k) }

// parseCSR accepts DER or PEM, checks the self-signature and returns the
// request and its DER.
func parseCSR(b []byte) (*x509.CertificateRequest, []byte, error) {
	der := b
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("-----BEGIN")) {
		block, _ := pem.Decode(b)
		if block == nil || block.Type != "CERTIFICATE REQUEST" {
			return nil, nil, fmt.Errorf("%w: CSR PEM block", ErrMalformedRequest)
		}
		der = block.Bytes
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: CSR: %v", ErrMalformedRequest, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("%w: CSR signature: %v", ErrCSRMismatch, err)
	}
	return csr, der, nil
}

// Begin verifies a TPM enrollment request and returns the credential
// activation challenge. See the package documentation for the checks. The
// caller must have checked that req.Token is a valid, unused token of the
// fleet before calling Begin (so unauthenticated callers cannot make the
// control plane do RSA work or fill the session store).
func (v *Verifier) Begin(ctx context.Context, req *Request) (*Challenge, error) {
	if req == nil || req.Token == "" || len(req.CSR) == 0 {
		return nil, fmt.Errorf("%w: token and CSR are required", ErrMalformedRequest)
	}
	if req.TPMKind == KindNone || req.TPM == nil {
		return nil, fmt.Errorf("%w: TPM evidence required (tpm_kind %q)", ErrTPMKindRefused, req.TPMKind)
	}
	if !v.kindAllowed(req.TPMKind) {
		return nil, fmt.Errorf("%w: %q", ErrTPMKindRefused, req.TPMKind)
	}
	ev := req.TPM
	ekPub, err := decodePublic(ev.EKPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: EK public: %v", ErrMalformedRequest, err)
	}
	akPub, err := decodePublic(ev.AKPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: AK public: %v", ErrMalformedRequest, err)
	}
	tlsPub, err := decodePublic(ev.TLSKeyPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: TLS key public: %v", ErrMalformedRequest, err)
	}
	csr, csrDER, err := parseCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	if err := checkKEMPublic(req.KEMPublic); err != nil {
		return nil, err
	}

	// The EK: a genuine TPM's, by its manufacturer's certificate.
	symBlockSize, err := checkEK(ekPub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEKUntrusted, err)
	}
	ekKey, err := ekPub.Key()
	if err != nil {
		return nil, fmt.Errorf("%w: EK key: %v", ErrMalformedRequest, err)
	}
	facts := Facts{Token: req.Token, TPMKind: req.TPMKind, CSR: csr, EKPublic: bytes.Clone(ev.EKPublic), AKPublic: bytes.Clone(ev.AKPublic)}
	spki, err := x509.MarshalPKIXPublicKey(ekKey)
	if err != nil {
		return nil, fmt.Errorf("%w: EK key: %v", ErrMalformedRequest, err)
	}
	facts.EKFingerprint = sha256.Sum256(spki)
	switch {
	case len(ev.EKCert) > 0:
		cert, info, err := verifyEKCert(ev.EKCert, ekKey, v.cfg.EKRoots, v.cfg.EKIntermediates, v.cfg.Now())
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrEKUntrusted, err)
		}
		facts.EKCert, facts.EKCertVerified, facts.TPM = cert.Raw, true, info
	case req.TPMKind == KindSimulated:
		// A simulator has no manufacturer to vouch for it. Whether a
		// simulated TPM may enroll at all is the allowed kinds' and the
		// fleet policy's decision (never in production); once allowed,
		// its EK is trusted on first use, and the device stays marked
		// "simulated" so policies can refuse it.
	case !v.cfg.AllowEKWithoutCert:
		return nil, fmt.Errorf("%w: no EK certificate", ErrEKUntrusted)
	}

	// The AK: a restricted signing key that (after activation) is proven
	// to sit in the same TPM.
	if err := checkAK(akPub); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAKInvalid, err)
	}
	akName, err := akPub.Name()
	if err != nil || akName.Digest == nil {
		return nil, fmt.Errorf("%w: AK name: %v", ErrMalformedRequest, err)
	}
	if facts.AKName, err = akName.Digest.Encode(); err != nil {
		return nil, fmt.Errorf("%w: AK name: %v", ErrMalformedRequest, err)
	}

	// The TLS key: a non-duplicable TPM key, certified by the AK for this
	// enrollment, and the key of the CSR.
	tlsKey, err := checkTLSKey(tlsPub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTLSKeyNotTPM, err)
	}
	if csrKey, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || !csrKey.Equal(tlsKey) {
		return nil, fmt.Errorf("%w: CSR is for another key than the TLS key", ErrCSRMismatch)
	}
	extra, err := checkCertify(ev.TLSKeyCertify, ev.TLSKeyCertifySignature, akPub, tlsPub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTLSKeyNotTPM, err)
	}
	if !bytes.Equal(extra, enrollbind.QualifyingDataKEM(req.Token, csrDER, req.KEMPublic)) {
		return nil, ErrCertifyNotBound
	}
	facts.TLSPublicKey = tlsKey
	if len(req.KEMPublic) > 0 {
		facts.KEMPublic = bytes.Clone(req.KEMPublic)
	}

	// The challenge: only the TPM with this EK, holding this AK, opens it.
	secret := make([]byte, secretSize)
	if _, err := io.ReadFull(v.cfg.Rand, secret); err != nil {
		return nil, fmt.Errorf("enroll: random secret: %w", err)
	}
	blob, encSecret, err := credactivation.Generate(akName.Digest, ekKey, symBlockSize, secret)
	if err != nil {
		return nil, fmt.Errorf("enroll: make credential: %w", err)
	}
	id, err := v.sessionID()
	if err != nil {
		return nil, err
	}
	expires := v.cfg.Now().Add(v.cfg.SessionTTL)
	if err := v.cfg.Sessions.Put(ctx, id, &Session{SecretHash: sha256.Sum256(secret), Facts: facts, ExpiresAt: expires}); err != nil {
		return nil, fmt.Errorf("enroll: store session: %w", err)
	}
	return &Challenge{SessionID: id, CredentialBlob: blob, EncryptedSecret: encSecret, ExpiresAt: expires}, nil
}

// Finish checks the secret the device's TPM released. The session is
// consumed whatever the outcome.
func (v *Verifier) Finish(ctx context.Context, answer *ChallengeAnswer) (*Facts, error) {
	if answer == nil || answer.SessionID == "" {
		return nil, fmt.Errorf("%w: session id required", ErrMalformedRequest)
	}
	s, err := v.cfg.Sessions.Take(ctx, answer.SessionID)
	if err != nil {
		if errors.Is(err, ErrSessionUnknown) {
			return nil, err
		}
		return nil, fmt.Errorf("enroll: load session: %w", err)
	}
	if !v.cfg.Now().Before(s.ExpiresAt) {
		return nil, fmt.Errorf("%w: expired", ErrSessionUnknown)
	}
	got := sha256.Sum256(answer.Secret)
	if subtle.ConstantTimeCompare(got[:], s.SecretHash[:]) != 1 {
		return nil, ErrAKNotInSameTPM
	}
	f := s.Facts
	return &f, nil
}

// VerifyCSROnly checks the request of a device without a TPM (tpm_kind
// "none"): a well-formed, self-signed CSR for an ECDSA P-256 key. It proves
// nothing about where the key lives; the caller must permit it by fleet
// policy and record the device as kind "none".
func VerifyCSROnly(req *Request) (*Facts, error) {
	if req == nil || req.Token == "" || len(req.CSR) == 0 {
		return nil, fmt.Errorf("%w: token and CSR are required", ErrMalformedRequest)
	}
	if req.TPMKind != KindNone || req.TPM != nil {
		return nil, fmt.Errorf("%w: a request with TPM evidence must use Begin", ErrMalformedRequest)
	}
	csr, _, err := parseCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	k, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || k.Curve.Params().Name != "P-256" {
		return nil, fmt.Errorf("%w: CSR key is not ECDSA P-256", ErrMalformedRequest)
	}
	if err := checkKEMPublic(req.KEMPublic); err != nil {
		return nil, err
	}
	f := &Facts{Token: req.Token, TPMKind: KindNone, CSR: csr, TLSPublicKey: k}
	if len(req.KEMPublic) > 0 {
		f.KEMPublic = bytes.Clone(req.KEMPublic)
	}
	return f, nil
}

var sessionEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// sessionID returns "enr-" and 20 lowercase base32 characters (100 random
// bits), like every other id (docs/identity.md).
func (v *Verifier) sessionID() (string, error) {
	var b [13]byte
	if _, err := io.ReadFull(v.cfg.Rand, b[:]); err != nil {
		return "", fmt.Errorf("enroll: session id: %w", err)
	}
	return "enr-" + strings.ToLower(sessionEncoding.EncodeToString(b[:]))[:20], nil
}
