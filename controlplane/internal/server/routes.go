package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/enroll"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// Route paths this package serves.
const (
	PathEnroll     = "/api/v1/enroll"
	PathActivate   = "/api/v1/enroll/activate"
	PathRenew      = "/api/v1/device/renew"
	PathDeviceSelf = "/api/v1/device/self"
	PathKEMKey     = "/api/v1/device/kem-key"
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.HandleFunc("POST "+PathEnroll, s.handleEnroll)
	mux.HandleFunc("POST "+PathActivate, s.handleActivate)
	mux.HandleFunc("POST "+PathRenew, s.handleRenew)
	mux.HandleFunc("GET "+PathDeviceSelf, s.handleSelf)
	mux.HandleFunc("PUT "+PathKEMKey, s.handleKEMKey)
	for path, allow := range map[string]string{
		"/healthz": "GET, HEAD", "/readyz": "GET, HEAD",
		PathEnroll: "POST", PathActivate: "POST", PathRenew: "POST", PathDeviceSelf: "GET, HEAD",
		PathKEMKey: "PUT",
	} {
		mux.HandleFunc(path, methodNotAllowed(allow))
	}
	s.packageRoutes(mux)
	s.policyRoutes(mux)
	s.jobRoutes(mux)
	mux.HandleFunc("/api/v1/device/", notFound)
	if s.cfg.API != nil {
		mux.Handle("/api/v1/", s.cfg.API)
	} else {
		mux.HandleFunc("/api/v1/", notFound)
	}
	if s.cfg.Dashboard != nil {
		mux.Handle("/dashboard/", s.cfg.Dashboard)
	}
	if s.cfg.Extra != nil {
		mux.Handle("/", s.cfg.Extra)
	} else {
		mux.HandleFunc("/", notFound)
	}
	return withRequestID(withRecover(s.log, mux))
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, r, http.StatusMethodNotAllowed, wire.CodeMethod, r.Method+" is not allowed on "+r.URL.Path)
	}
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, r, http.StatusNotFound, wire.CodeNotFound, "no route "+r.URL.Path)
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	err := s.cfg.Store.Ping(ctx)
	if err == nil && s.cfg.Ready != nil {
		err = s.cfg.Ready(ctx)
	}
	if err != nil {
		s.log.Warn("not ready", "error", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleEnroll is POST /api/v1/enroll: check the token without consuming
// it, apply the fleet's TPM policy, then either start the TPM challenge or,
// for a device without a TPM that the fleet admits, enroll it at once.
func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	var req wire.EnrollRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Token == "" || len(req.CSR) == 0 || req.TPMKind == "" {
		writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "token, csr and tpm_kind are required")
		return
	}
	ctx := r.Context()
	tok, fleet, ok := s.tokenAndFleet(w, r, req.Token)
	if !ok {
		return
	}
	if !s.admitKind(w, r, fleet, req.TPMKind) {
		return
	}
	if req.TPMKind == wire.TPMKindNone {
		facts, err := enroll.VerifyCSROnly(&req)
		if err != nil {
			s.enrollError(w, r, err)
			return
		}
		s.completeEnrollment(w, r, tok, fleet, facts)
		return
	}
	ch, err := s.cfg.Verifier.Begin(ctx, &req)
	if err != nil {
		s.enrollError(w, r, err)
		return
	}
	ch.SessionID = s.sealSession(ch.SessionID)
	writeJSON(w, http.StatusOK, ch)
}

// handleActivate is POST /api/v1/enroll/activate: the TPM released the
// credential secret; consume the token and create the device and its
// certificate in one transaction.
func (s *Server) handleActivate(w http.ResponseWriter, r *http.Request) {
	var ans wire.ChallengeAnswer
	if !decode(w, r, &ans) {
		return
	}
	if ans.SessionID == "" || len(ans.Secret) == 0 {
		writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "session_id and secret are required")
		return
	}
	sid, ok := s.openSession(ans.SessionID)
	if !ok {
		writeError(w, r, http.StatusForbidden, wire.CodeEnrollRefused, "unknown or expired enrollment session")
		return
	}
	ans.SessionID = sid
	facts, err := s.cfg.Verifier.Finish(r.Context(), &ans)
	if err != nil {
		s.enrollError(w, r, err)
		return
	}
	tok, fleet, ok := s.tokenAndFleet(w, r, facts.Token)
	if !ok {
		return
	}
	// The policy may have changed since Begin.
	if !s.admitKind(w, r, fleet, facts.TPMKind) {
		return
	}
	s.completeEnrollment(w, r, tok, fleet, facts)
}

func (s *Server) tokenAndFleet(w http.ResponseWriter, r *http.Request, token string) (store.EnrollmentToken, store.Fleet, bool) {
	tok, err := s.cfg.Store.LookupEnrollmentToken(r.Context(), token)
	if err != nil {
		s.tokenError(w, r, err)
		return store.EnrollmentToken{}, store.Fleet{}, false
	}
	fleet, err := s.cfg.Store.GetFleet(r.Context(), tok.Tenant, tok.FleetID)
	if err != nil {
		s.internalError(w, r, "enroll: fleet of token", err)
		return store.EnrollmentToken{}, store.Fleet{}, false
	}
	return tok, fleet, true
}

func (s *Server) tokenError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, store.ErrTokenUsed):
		writeError(w, r, http.StatusConflict, wire.CodeTokenUsed, "the enrollment token was already used")
	case errors.Is(err, store.ErrTokenExpired):
		writeError(w, r, http.StatusGone, wire.CodeTokenExpired, "the enrollment token has expired")
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid), errors.Is(err, store.ErrUnauthenticated):
		writeError(w, r, http.StatusUnauthorized, wire.CodeUnauthenticated, "invalid enrollment token")
	default:
		s.internalError(w, r, "enroll: token lookup", err)
	}
}

// admitKind applies the server-wide kinds and the fleet's policy: hardware
// always (if the server admits it), swtpm and simulated only with
// allow_simulated_tpm, none only with allow_no_tpm.
func (s *Server) admitKind(w http.ResponseWriter, r *http.Request, fleet store.Fleet, kind string) bool {
	var fleetOK bool
	switch kind {
	case wire.TPMKindHardware:
		fleetOK = true
	case wire.TPMKindSWTPM, wire.TPMKindSimulated:
		fleetOK = fleet.Policy.AllowSimulatedTPM
	case wire.TPMKindNone:
		fleetOK = fleet.Policy.AllowNoTPM
	default:
		writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "tpm_kind must be hardware, swtpm, simulated or none")
		return false
	}
	if !s.kindAllowed(kind) {
		writeError(w, r, http.StatusForbidden, wire.CodeEnrollRefused, "this control plane does not accept TPM kind "+kind)
		return false
	}
	if !fleetOK {
		msg := "fleet " + fleet.Name + " does not accept TPM kind " + kind
		if kind == wire.TPMKindNone {
			msg = "fleet " + fleet.Name + " does not allow devices without a TPM (its policy has allow_no_tpm false)"
		}
		writeError(w, r, http.StatusForbidden, wire.CodeEnrollRefused, msg)
		return false
	}
	return true
}

func (s *Server) enrollError(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Info("enrollment refused", "error", err, "request_id", RequestID(r.Context()))
	switch {
	case errors.Is(err, enroll.ErrMalformedRequest):
		writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, err.Error())
	case errors.Is(err, enroll.ErrTooManySessions):
		writeError(w, r, http.StatusServiceUnavailable, wire.CodeInternal, "too many pending enrollments; retry later")
	case errors.Is(err, enroll.ErrTPMKindRefused), errors.Is(err, enroll.ErrEKUntrusted), errors.Is(err, enroll.ErrAKInvalid),
		errors.Is(err, enroll.ErrTLSKeyNotTPM), errors.Is(err, enroll.ErrCertifyNotBound), errors.Is(err, enroll.ErrCSRMismatch),
		errors.Is(err, enroll.ErrAKNotInSameTPM), errors.Is(err, enroll.ErrSessionUnknown):
		// The refusals' texts are documented as safe to show.
		writeError(w, r, http.StatusForbidden, wire.CodeEnrollRefused, err.Error())
	default:
		s.internalError(w, r, "enroll", err)
	}
}

// storeKind maps the wire's TPM kind names to the store's.
func storeKind(k string) store.TPMKind {
	switch k {
	case wire.TPMKindHardware:
		return store.TPMHardware
	case wire.TPMKindSWTPM:
		return store.TPMSoftware
	case wire.TPMKindSimulated:
		return store.TPMSimulator
	default:
		return store.TPMNone
	}
}

func (s *Server) certTTL(f store.Fleet) time.Duration {
	if d := time.Duration(f.Policy.CertTTL); d > 0 {
		return d
	}
	return s.cfg.DefaultCertTTL
}

// completeEnrollment consumes the token and creates the device, its
// certificate and the audit entry in one transaction, then answers 201.
func (s *Server) completeEnrollment(w http.ResponseWriter, r *http.Request, tok store.EnrollmentToken, fleet store.Fleet, facts *enroll.Facts) {
	ctx := r.Context()
	tenant := tok.Tenant
	// Unseal the CA key before the transaction, which must not read
	// through the store.
	if err := s.cfg.CA.Preload(ctx, tenant); err != nil {
		s.internalError(w, r, "enroll: tenant CA", err)
		return
	}
	bundle, err := s.cfg.CA.Bundle(ctx, tenant)
	if err != nil {
		s.internalError(w, r, "enroll: CA bundle", err)
		return
	}
	deviceID := store.NewID(store.PrefixDevice)
	kind := storeKind(facts.TPMKind)
	d := store.Device{ID: deviceID, FleetID: fleet.ID, Name: deviceID, TPMKind: kind}
	if kind != store.TPMNone {
		d.EKFingerprint = hex.EncodeToString(facts.EKFingerprint[:])
		d.EKPublic, d.AKPublic = facts.EKPublic, facts.AKPublic
	}
	// The verifier checked that it parses and, with TPM evidence, that the
	// TPM's certification covers it.
	d.KEMPublic = facts.KEMPublic
	var issued ca.IssuedCert
	err = s.cfg.Store.WithTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.ConsumeEnrollmentToken(ctx, facts.Token, deviceID); err != nil {
			return err
		}
		if _, err := tx.CreateDevice(ctx, tenant, d); err != nil {
			return err
		}
		var err error
		issued, err = s.cfg.CA.IssueDeviceCert(ctx, ca.DeviceCertRequest{
			Tenant: tenant, Fleet: fleet.ID, Device: deviceID, PublicKey: facts.TLSPublicKey, TTL: s.certTTL(fleet),
		})
		if err != nil {
			return err
		}
		if err := tx.RecordCertificate(ctx, tenant, issued.Record(tenant, deviceID)); err != nil {
			return err
		}
		return AppendAudit(ctx, tx, s.now(), tenant, "device:"+deviceID, "device.enroll", deviceID, RequestID(ctx), map[string]any{
			"fleet_id": fleet.ID, "token_id": tok.ID, "tpm_kind": facts.TPMKind,
			"ek_fingerprint": d.EKFingerprint, "cert_serial": store.SerialString(issued.Cert.SerialNumber),
			"ek_cert_verified": facts.EKCertVerified, "kem_key_id": kemKeyID(facts.KEMPublic),
		})
	})
	switch {
	case err == nil:
	case errors.Is(err, store.ErrTokenUsed), errors.Is(err, store.ErrTokenExpired), errors.Is(err, store.ErrNotFound):
		s.tokenError(w, r, err)
		return
	case errors.Is(err, store.ErrConflict):
		writeError(w, r, http.StatusConflict, wire.CodeConflict, "this TPM is already enrolled in the tenant; delete the old device first")
		return
	default:
		s.internalError(w, r, "enroll: commit", err)
		return
	}
	s.log.Info("device enrolled", "tenant", tenant, "fleet", fleet.ID, "device", deviceID, "tpm_kind", facts.TPMKind,
		"request_id", RequestID(ctx))
	if s.cfg.Enrolled != nil {
		s.cfg.Enrolled(ctx, tenant, deviceID)
	}
	writeJSON(w, http.StatusCreated, wire.EnrollResponse{DeviceID: deviceID, CertificatePEM: string(issued.PEM), CAPEM: string(bundle), BrokerURL: s.brokerURL(r)})
}

// deviceFromTLS authenticates a device by its client certificate and
// re-reads its state: a device revoked after its connection was
// established is refused here.
func (s *Server) deviceFromTLS(w http.ResponseWriter, r *http.Request) (store.Device, *x509.Certificate, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		writeError(w, r, http.StatusUnauthorized, wire.CodeUnauthenticated, "a device client certificate is required")
		return store.Device{}, nil, false
	}
	leaf := r.TLS.VerifiedChains[0][0]
	id, err := mqttacl.IdentityFromCert(leaf)
	if err != nil || id.Kind != mqttacl.KindDevice {
		writeError(w, r, http.StatusForbidden, wire.CodeForbidden, "not a device certificate")
		return store.Device{}, nil, false
	}
	ctx := r.Context()
	dev, err := s.cfg.Store.GetDevice(ctx, id.Tenant, id.Device)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, r, http.StatusUnauthorized, wire.CodeUnauthenticated, "unknown device")
		return store.Device{}, nil, false
	} else if err != nil {
		s.internalError(w, r, "device lookup", err)
		return store.Device{}, nil, false
	}
	if dev.Status == store.DeviceRevoked {
		writeError(w, r, http.StatusForbidden, wire.CodeRevoked, "the device is revoked")
		return store.Device{}, nil, false
	}
	revoked, err := s.cfg.Store.IsRevoked(ctx, id.Tenant, store.SerialString(leaf.SerialNumber))
	if err != nil || revoked {
		writeError(w, r, http.StatusForbidden, wire.CodeRevoked, "the client certificate is revoked")
		return store.Device{}, nil, false
	}
	return dev, leaf, true
}

// RenewRequest is the body of POST /api/v1/device/renew.
type RenewRequest struct {
	CSR string `json:"csr"`
}

// handleRenew is POST /api/v1/device/renew: a new certificate for the same
// (TPM) key.
func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	dev, leaf, ok := s.deviceFromTLS(w, r)
	if !ok {
		return
	}
	var req RenewRequest
	if !decode(w, r, &req) {
		return
	}
	csr, err := ca.ParseCSR([]byte(req.CSR))
	if err != nil {
		writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "csr: not a valid PEM certificate request")
		return
	}
	if !samePublicKey(csr.PublicKey, leaf.PublicKey) {
		writeError(w, r, http.StatusForbidden, wire.CodeForbidden, "the CSR must be for the device's current key")
		return
	}
	ctx := r.Context()
	fleet, err := s.cfg.Store.GetFleet(ctx, dev.Tenant, dev.FleetID)
	if err != nil {
		s.internalError(w, r, "renew: fleet", err)
		return
	}
	if err := s.cfg.CA.Preload(ctx, dev.Tenant); err != nil {
		s.internalError(w, r, "renew: tenant CA", err)
		return
	}
	bundle, err := s.cfg.CA.Bundle(ctx, dev.Tenant)
	if err != nil {
		s.internalError(w, r, "renew: CA bundle", err)
		return
	}
	var issued ca.IssuedCert
	err = s.cfg.Store.WithTx(ctx, func(tx *store.Tx) error {
		cur, err := tx.GetDevice(ctx, dev.Tenant, dev.ID)
		if err != nil {
			return err
		}
		if cur.Status != store.DeviceEnrolled {
			return errRevoked
		}
		issued, err = s.cfg.CA.IssueDeviceCert(ctx, ca.DeviceCertRequest{
			Tenant: dev.Tenant, Fleet: dev.FleetID, Device: dev.ID, PublicKey: csr.PublicKey, TTL: s.certTTL(fleet),
		})
		if err != nil {
			return err
		}
		if err := tx.RecordCertificate(ctx, dev.Tenant, issued.Record(dev.Tenant, dev.ID)); err != nil {
			return err
		}
		return AppendAudit(ctx, tx, s.now(), dev.Tenant, "device:"+dev.ID, "device.renew", dev.ID, RequestID(ctx), map[string]any{
			"cert_serial": store.SerialString(issued.Cert.SerialNumber), "previous_serial": store.SerialString(leaf.SerialNumber),
		})
	})
	switch {
	case err == nil:
	case errors.Is(err, errRevoked):
		writeError(w, r, http.StatusForbidden, wire.CodeRevoked, "the device is revoked")
		return
	default:
		s.internalError(w, r, "renew: commit", err)
		return
	}
	writeJSON(w, http.StatusOK, wire.EnrollResponse{DeviceID: dev.ID, CertificatePEM: string(issued.PEM), CAPEM: string(bundle), BrokerURL: s.brokerURL(r)})
}

var errRevoked = errors.New("device revoked")

func samePublicKey(a, b any) bool {
	ka, ok := a.(*ecdsa.PublicKey)
	if !ok {
		return false
	}
	return ka.Equal(b)
}

// kemKeyID is the tgsp key id of a KEM public key for the audit chain ("" for
// none or one that does not parse).
func kemKeyID(kem []byte) string {
	if len(kem) == 0 {
		return ""
	}
	k, err := tgsp.ParseRecipientPublicKeyBytes(kem)
	if err != nil {
		return ""
	}
	return k.KeyID()
}

// handleKEMKey is PUT /api/v1/device/kem-key: a device that enrolled
// without a KEM public key (an agent from before package key grants)
// registers one. A device's key is set once: the same key again answers
// 200 and changes nothing (a retry), another key is 409 CONFLICT. The key
// is not bound to the TPM the way an enrollment's is; the device's mTLS
// certificate (a TPM key where there is one) is what vouches for it.
func (s *Server) handleKEMKey(w http.ResponseWriter, r *http.Request) {
	dev, _, ok := s.deviceFromTLS(w, r)
	if !ok {
		return
	}
	var req wire.KEMKeyRequest
	if !decode(w, r, &req) {
		return
	}
	if len(req.KEMPublic) == 0 {
		writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "kem_public is required")
		return
	}
	pub, err := tgsp.ParseRecipientPublicKeyBytes(req.KEMPublic)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, wire.CodeBadRequest, "kem_public is not an X-Wing public key in tgsp recipient encoding")
		return
	}
	ctx := r.Context()
	var updated store.Device
	err = s.cfg.Store.WithTx(ctx, func(tx *store.Tx) error {
		d, set, err := tx.SetDeviceKEMPublic(ctx, dev.Tenant, dev.ID, req.KEMPublic)
		if err != nil {
			return err
		}
		if d.Status != store.DeviceEnrolled {
			return errRevoked
		}
		updated = d
		if !set {
			return nil
		}
		return AppendAudit(ctx, tx, s.now(), dev.Tenant, "device:"+dev.ID, "device.kem_key", dev.ID, RequestID(ctx), map[string]any{
			"kem_key_id": pub.KeyID(),
		})
	})
	switch {
	case err == nil:
	case errors.Is(err, store.ErrConflict):
		writeError(w, r, http.StatusConflict, wire.CodeConflict,
			"the device already has another KEM key; it is set once, so enroll the device again to change it")
		return
	case errors.Is(err, errRevoked):
		writeError(w, r, http.StatusForbidden, wire.CodeRevoked, "the device is revoked")
		return
	case errors.Is(err, store.ErrNotFound):
		writeError(w, r, http.StatusUnauthorized, wire.CodeUnauthenticated, "unknown device")
		return
	default:
		s.internalError(w, r, "kem key: commit", err)
		return
	}
	writeJSON(w, http.StatusOK, api.NewDevice(updated))
}

// DeviceSelf is GET /api/v1/device/self: the device's record and its own
// current attestation verdict (so the agent's install policy can require
// it: a device cannot read its fleet's verdict topic).
type DeviceSelf struct {
	api.Device
	Attestation *wire.Verdict `json:"attestation"`
}

func (s *Server) handleSelf(w http.ResponseWriter, r *http.Request) {
	dev, _, ok := s.deviceFromTLS(w, r)
	if !ok {
		return
	}
	v, err := s.selfVerdict(r.Context(), dev)
	if err != nil {
		s.log.Warn("device self: attestation state", "tenant", dev.Tenant, "device", dev.ID, "error", err)
		writeError(w, r, http.StatusServiceUnavailable, wire.CodeInternal, "attestation state unavailable")
		return
	}
	writeJSON(w, http.StatusOK, DeviceSelf{Device: api.NewDevice(dev), Attestation: v})
}

// selfVerdict is the device's stored verdict as published (state unknown
// when it was never attested).
func (s *Server) selfVerdict(ctx context.Context, dev store.Device) (*wire.Verdict, error) {
	st, err := s.cfg.Store.GetAttestationState(ctx, dev.Tenant, dev.ID)
	if err != nil {
		return nil, err
	}
	v := &wire.Verdict{Schema: wire.VerdictSchema, Tenant: dev.Tenant, Fleet: dev.FleetID, Device: dev.ID,
		State: string(st.State), TPMKind: string(dev.TPMKind), PCRDigest: st.PCRDigest, EvidenceAt: st.EvidenceAt,
		NonceAgeMS: st.NonceAgeMS, Reboot: st.Reboot, VerdictAt: st.VerdictAt}
	if len(st.Reasons) > 0 {
		if err := json.Unmarshal(st.Reasons, &v.Reasons); err != nil {
			return nil, fmt.Errorf("stored reasons: %w", err)
		}
	}
	return v, nil
}

// Enrollment session handles. The verifier's session id goes to the device
// with an HMAC under TG_SECRET_KEY, so a guessed or altered handle is
// refused before the session store is touched, and every replica sharing
// the secret recognises the handles of the others.
const sessionMACLabel = "tensorguardflow enroll session v1\x00"

func (s *Server) sessionMAC(sid string) []byte {
	m := hmac.New(sha256.New, s.cfg.SessionKey)
	m.Write([]byte(sessionMACLabel))
	m.Write([]byte(sid))
	return m.Sum(nil)[:16]
}

func (s *Server) sealSession(sid string) string {
	return sid + "." + base64.RawURLEncoding.EncodeToString(s.sessionMAC(sid))
}

func (s *Server) openSession(handle string) (string, bool) {
	i := strings.LastIndexByte(handle, '.')
	if i <= 0 {
		return "", false
	}
	sid := handle[:i]
	mac, err := base64.RawURLEncoding.DecodeString(handle[i+1:])
	if err != nil || !hmac.Equal(mac, s.sessionMAC(sid)) {
		return "", false
	}
	return sid, true
}

func (s *Server) brokerURL(r *http.Request) string {
	if s.cfg.BrokerURL == nil {
		return ""
	}
	return s.cfg.BrokerURL(r)
}
