package tpmdev

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// Standard EK locations (TCG EK Credential Profile 2.x, TCG TPM v2.0
// Provisioning Guidance).
const (
	EKCertNVIndexRSA  = 0x01c00002 // RSA 2048 EK certificate (low range)
	EKCertNVIndexECC  = 0x01c0000a // ECC NIST P-256 EK certificate (low range)
	ekPersistentRSA   = tpmutil.Handle(0x81010001)
	ekPersistentECC   = tpmutil.Handle(0x81010002)
	templateLabelAK   = "tensorguardflow/ak/v1"
	templateLabelTLS  = "tensorguardflow/tls/v1"
	nvReadBlockSize   = 0 // let go-tpm ask the TPM for TPM2_PT_NV_BUFFER_MAX
	ecP256CoordLength = 32
)

// ErrNoEK is returned when the TPM has no usable endorsement key.
var ErrNoEK = errors.New("tpmdev: no endorsement key")

// labelledUnique fills a P-256 template's unique field from a label. For a
// primary key the unique field is only an input to the key derivation, so a
// distinct label gives keys that no other software derives by accident from
// the same otherwise-common template.
func labelledUnique(label string) tpm2.ECPoint {
	x := sha256.Sum256([]byte(label + "/x"))
	y := sha256.Sum256([]byte(label + "/y"))
	return tpm2.ECPoint{XRaw: x[:ecP256CoordLength], YRaw: y[:ecP256CoordLength]}
}

// AKTemplate is the template of the attestation key: an ECC NIST P-256,
// ECDSA-SHA256, restricted signing primary key in the owner hierarchy,
// fixedTPM, fixedParent and sensitiveDataOrigin (the TPM generated it and it
// can never be duplicated), usable with an empty password.
func AKTemplate() tpm2.Public {
	return tpm2.Public{
		Type:       tpm2.AlgECC,
		NameAlg:    tpm2.AlgSHA256,
		Attributes: tpm2.FlagSignerDefault, // sign|restricted|fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth
		ECCParameters: &tpm2.ECCParams{
			Sign:    &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256},
			CurveID: tpm2.CurveNISTP256,
			Point:   labelledUnique(templateLabelAK),
		},
	}
}

// TLSKeyTemplate is the template of the device's mTLS key: an ECC NIST
// P-256, ECDSA-SHA256, unrestricted signing primary key in the owner
// hierarchy, fixedTPM, fixedParent and sensitiveDataOrigin, usable with an
// empty password. It is not a decryption key, so it cannot be abused as one.
func TLSKeyTemplate() tpm2.Public {
	return tpm2.Public{
		Type:    tpm2.AlgECC,
		NameAlg: tpm2.AlgSHA256,
		Attributes: tpm2.FlagSign | tpm2.FlagFixedTPM | tpm2.FlagFixedParent |
			tpm2.FlagSensitiveDataOrigin | tpm2.FlagUserWithAuth,
		ECCParameters: &tpm2.ECCParams{
			Sign:    &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256},
			CurveID: tpm2.CurveNISTP256,
			Point:   labelledUnique(templateLabelTLS),
		},
	}
}

// Key is a key loaded in the TPM. Close it when done: TPMs hold only a few
// loaded objects.
//
// A primary key of the owner hierarchy (AK, TLSKey, CreatePrimary) may be
// flushed by its Device when an operation needs room (see Seal): the Device
// re-creates it from its template on next use, which gives back the same
// key. Holders never notice, except for the time re-creation takes.
type Key struct {
	dev   *Device
	pub   []byte // TPMT_PUBLIC
	goPub crypto.PublicKey
	name  tpm2.Name

	// Guarded by dev.mu.
	k      *client.Key  // nil while evicted
	tmpl   *tpm2.Public // set for a primary the Device may evict and re-create
	closed bool
}

// errKeyClosed is returned by operations on a closed Key.
var errKeyClosed = errors.New("tpmdev: key closed")

// newKeyLocked wraps a freshly loaded key; tmpl, when set, lets the Device
// evict it and re-create it from that template in the owner hierarchy. The
// caller holds d.mu.
func newKeyLocked(d *Device, k *client.Key, tmpl *tpm2.Public) (*Key, error) {
	pub, err := k.PublicArea().Encode()
	if err != nil {
		k.Close()
		return nil, fmt.Errorf("encode public area: %w", err)
	}
	key := &Key{dev: d, pub: pub, goPub: k.PublicKey(), name: k.Name(), k: k, tmpl: tmpl}
	if tmpl != nil {
		d.trackLocked(key)
	}
	return key, nil
}

// loadLocked returns the loaded key, re-creating it if the Device evicted
// it. The caller holds dev.mu.
func (k *Key) loadLocked(rw io.ReadWriter) (*client.Key, error) {
	switch {
	case k.closed:
		return nil, errKeyClosed
	case k.k != nil:
		return k.k, nil
	case k.tmpl == nil:
		return nil, errKeyClosed
	}
	ck, err := client.NewKey(rw, tpm2.HandleOwner, *k.tmpl)
	if err != nil {
		return nil, fmt.Errorf("re-create key: %w", err)
	}
	pub, err := ck.PublicArea().Encode()
	if err != nil || !bytes.Equal(pub, k.pub) {
		ck.Close()
		// The owner hierarchy's seed changed (TPM2_Clear): this is no
		// longer the key the caller holds.
		return nil, errors.New("tpmdev: key changed since it was loaded (TPM cleared?)")
	}
	k.k = ck
	k.dev.trackLocked(k)
	return ck, nil
}

// PublicArea returns the key's TPMT_PUBLIC in TPM wire format, which is what
// the control plane verifies (attributes) and names (Name = nameAlg ‖
// H(TPMT_PUBLIC)).
func (k *Key) PublicArea() []byte { return bytes.Clone(k.pub) }

// Public returns the Go public key.
func (k *Key) Public() crypto.PublicKey { return k.goPub }

// Name returns the key's TPM Name: nameAlg (2 bytes) ‖ H_nameAlg(TPMT_PUBLIC),
// without the TPM2B size prefix.
func (k *Key) Name() ([]byte, error) {
	if k.name.Digest == nil {
		return nil, errors.New("key has no digest name")
	}
	return k.name.Digest.Encode()
}

// Close flushes the key from the TPM (persistent handles stay).
func (k *Key) Close() {
	k.dev.mu.Lock()
	defer k.dev.mu.Unlock()
	if k.k != nil && !k.dev.closed {
		k.k.Close()
	}
	k.k, k.closed = nil, true
	delete(k.dev.loaded, k)
}

// Signer returns a crypto.Signer whose Sign runs TPM2_Sign with the key.
// Only unrestricted signing keys (the TLS key) can be used this way.
func (k *Key) Signer() (crypto.Signer, error) {
	err := k.dev.with(func(rw io.ReadWriter) error {
		ck, err := k.loadLocked(rw)
		if err != nil {
			return err
		}
		_, err = ck.GetSigner()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tpm signer: %w", err)
	}
	return &lockedSigner{key: k}, nil
}

// lockedSigner serialises Sign with every other command on the Device and
// reloads the key if the Device evicted it meanwhile.
type lockedSigner struct {
	key *Key
}

func (l *lockedSigner) Public() crypto.PublicKey { return l.key.goPub }

func (l *lockedSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	var sig []byte
	err := l.key.dev.with(func(rw io.ReadWriter) error {
		ck, err := l.key.loadLocked(rw)
		if err != nil {
			return err
		}
		s, err := ck.GetSigner()
		if err != nil {
			return err
		}
		sig, err = s.Sign(rand, digest, opts)
		return err
	})
	return sig, err
}

// AK creates (or, after a restart, re-creates identically) the attestation
// key from AKTemplate.
func (d *Device) AK() (*Key, error) { return d.primary(AKTemplate(), "attestation key") }

// TLSKey creates (or re-creates identically) the device's mTLS key from
// TLSKeyTemplate.
func (d *Device) TLSKey() (*Key, error) { return d.primary(TLSKeyTemplate(), "tls key") }

// CreatePrimary creates a primary key in the owner hierarchy from any
// template. Enrollment uses AK and TLSKey; this exists for callers with
// other needs (and for tests that must produce keys the control plane has
// to refuse).
func (d *Device) CreatePrimary(tmpl tpm2.Public) (*Key, error) {
	return d.primary(tmpl, "primary key")
}

func (d *Device) primary(tmpl tpm2.Public, what string) (*Key, error) {
	var key *Key
	err := d.with(func(rw io.ReadWriter) error {
		ck, err := client.NewKey(rw, tpm2.HandleOwner, tmpl)
		if err != nil {
			return err
		}
		key, err = newKeyLocked(d, ck, &tmpl)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", what, err)
	}
	return key, nil
}

// EK is the TPM's endorsement key and, when the manufacturer provisioned
// one, its certificate.
type EK struct {
	*Key
	// Cert is the DER EK certificate read from NV, or nil when absent.
	Cert []byte
	// CertNVIndex is the NV index Cert was read from (0 when absent).
	CertNVIndex uint32
}

type ekSpec struct {
	template   tpm2.Public
	persistent tpmutil.Handle
	certIndex  uint32
}

var ekSpecs = []ekSpec{
	{client.DefaultEKTemplateRSA(), ekPersistentRSA, EKCertNVIndexRSA},
	{client.DefaultEKTemplateECC(), ekPersistentECC, EKCertNVIndexECC},
}

// EK returns the endorsement key. It prefers the RSA 2048 EK, then the ECC
// P-256 EK, choosing the first whose certificate is in NV; when neither has
// a certificate it returns the RSA EK without one (the control plane decides
// whether it accepts that). Only the TCG default (low-range) templates are
// supported, which is what the credential activation in the control plane
// expects (AES-128-CFB symmetric, SHA-256 name).
func (d *Device) EK() (*EK, error) {
	var first *EK
	var lastErr error
	for _, spec := range ekSpecs {
		ek, err := d.loadEK(spec)
		if err != nil {
			lastErr = err
			continue
		}
		if ek.Cert != nil {
			if first != nil {
				first.Close()
			}
			return ek, nil
		}
		if first == nil {
			first = ek
		} else {
			ek.Close()
		}
	}
	if first == nil {
		return nil, fmt.Errorf("%w: %w", ErrNoEK, lastErr)
	}
	return first, nil
}

func (d *Device) loadEK(spec ekSpec) (*EK, error) {
	var k *Key
	var cert []byte
	err := d.with(func(rw io.ReadWriter) error {
		ck, err := loadPersistentEK(rw, spec)
		if err != nil {
			// Not provisioned at the standard handle (or something else
			// lives there): derive it from the endorsement seed instead.
			// This never writes a persistent handle.
			if ck, err = client.NewKey(rw, tpm2.HandleEndorsement, spec.template); err != nil {
				return err
			}
		}
		if cert, err = readEKCert(rw, spec.certIndex, ck.PublicKey()); err != nil {
			ck.Close()
			return err
		}
		// The EK is never evicted (no template given): re-creating it may
		// need a policy session, and it is loaded only for enrollment.
		k, err = newKeyLocked(d, ck, nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("endorsement key: %w", err)
	}
	ek := &EK{Key: k, Cert: cert}
	if cert != nil {
		ek.CertNVIndex = spec.certIndex
	}
	return ek, nil
}

func loadPersistentEK(rw io.ReadWriter, spec ekSpec) (*client.Key, error) {
	pub, _, _, err := tpm2.ReadPublic(rw, spec.persistent)
	if err != nil {
		return nil, err
	}
	if !sameTemplate(pub, spec.template) {
		return nil, fmt.Errorf("persistent handle %#x does not hold a default-template EK", spec.persistent)
	}
	sess, err := client.NewEKSession(rw)
	if err != nil {
		return nil, err
	}
	k, err := client.LoadCachedKey(rw, spec.persistent, sess)
	if err != nil {
		_ = sess.Close()
		return nil, err
	}
	return k, nil
}

// sameTemplate compares everything a template fixes except the unique field.
func sameTemplate(pub, tmpl tpm2.Public) bool {
	if pub.Type != tmpl.Type || pub.NameAlg != tmpl.NameAlg || pub.Attributes != tmpl.Attributes ||
		!bytes.Equal(pub.AuthPolicy, tmpl.AuthPolicy) {
		return false
	}
	switch pub.Type {
	case tpm2.AlgRSA:
		p, t := pub.RSAParameters, tmpl.RSAParameters
		return p != nil && t != nil && p.KeyBits == t.KeyBits && sameSym(p.Symmetric, t.Symmetric)
	case tpm2.AlgECC:
		p, t := pub.ECCParameters, tmpl.ECCParameters
		return p != nil && t != nil && p.CurveID == t.CurveID && sameSym(p.Symmetric, t.Symmetric)
	}
	return false
}

func sameSym(a, b *tpm2.SymScheme) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// readEKCert reads the EK certificate, first with owner authorisation (the
// TCG profile sets TPMA_NV_OWNERREAD), then with the index's own empty
// authorisation (TPMA_NV_AUTHREAD). A missing index is not an error; a
// certificate that does not parse or is for another key is.
func readEKCert(rw io.ReadWriter, index uint32, pub crypto.PublicKey) ([]byte, error) {
	h := tpmutil.Handle(index)
	der, err := tpm2.NVReadEx(rw, h, tpm2.HandleOwner, "", nvReadBlockSize)
	if err != nil {
		if der, err = tpm2.NVReadEx(rw, h, h, "", nvReadBlockSize); err != nil {
			return nil, nil
		}
	}
	// NV indices are often larger than the certificate and padded; keep
	// exactly the DER SEQUENCE.
	cert, err := x509.ParseCertificate(trimDER(der))
	if err != nil {
		return nil, fmt.Errorf("parse EK certificate at NV %#x: %w", index, err)
	}
	if eq, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(pub) {
		return nil, fmt.Errorf("EK certificate at NV %#x is for another key", index)
	}
	return cert.Raw, nil
}

// trimDER cuts der to the length its outer DER header declares.
func trimDER(der []byte) []byte {
	if len(der) < 2 || der[0] != 0x30 {
		return der
	}
	n, hdr := int(der[1]), 2
	if n&0x80 != 0 {
		octets := n & 0x7f
		if octets == 0 || octets > 3 || len(der) < 2+octets {
			return der
		}
		n = 0
		for _, b := range der[2 : 2+octets] {
			n = n<<8 | int(b)
		}
		hdr += octets
	}
	if hdr+n > len(der) {
		return der
	}
	return der[:hdr+n]
}
