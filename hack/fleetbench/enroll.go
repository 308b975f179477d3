package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/enrollbind"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmsim"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Enrollment routes (docs/api.md).
const (
	pathEnroll   = "/api/v1/enroll"
	pathActivate = "/api/v1/enroll/activate"
)

// tpmEnrollResult is the simulator-TPM enrollment benchmark.
type tpmEnrollResult struct {
	N int `json:"n"`
	// ManufactureMs: starting a fresh simulator and writing an EK
	// certificate into its NV. A factory step, not part of enrollment;
	// excluded from every rate.
	ManufactureMs float64 `json:"manufacture_ms"`
	// TotalMs is one enrollment as the agent does it, client TPM work plus
	// both round trips; DevicesPerS = 1000 / TotalMs (sequential).
	TotalMs     float64 `json:"total_ms"`
	DevicesPerS float64 `json:"devices_per_s"`
	// ClientTPMMs is the device's TPM work (TLS key, CSR signature, EK,
	// AK, TPM2_Certify, TPM2_ActivateCredential); EKMs the EK part of it.
	ClientTPMMs float64 `json:"client_tpm_ms"`
	EKMs        float64 `json:"ek_ms"`
	// ServerRTTMs is POST enroll + POST activate as the client sees them
	// on loopback (new TLS connection each enrollment, as a device has).
	ServerRTTMs    float64 `json:"server_rtt_ms"`
	ServerRTTP50Ms float64 `json:"server_rtt_p50_ms"`
	// ServerCPUMs is the control plane's utime+stime per enrollment;
	// ServerCapacityPerS = cores / that: what the server could sustain if
	// its CPU were the only limit (an estimate, not measured under load).
	ServerCPUMs        float64 `json:"server_cpu_ms"`
	ServerCapacityPerS float64 `json:"server_capacity_per_s_est"`
	ServerShare        float64 `json:"server_share"`
}

// ekCA is a stand-in TPM manufacturer: it signs the simulator's EK
// certificates so the control plane verifies an EK chain as for hardware.
type ekCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newEKCA() (*ekCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fleetbench TPM manufacturer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &ekCA{cert: cert, key: key}, nil
}

func (c *ekCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})
}

// issueEK issues an EK certificate shaped as the TCG EK Credential Profile
// says (critical directoryName SAN, tcg-kp-EKCertificate EKU), as
// tpmdevtest.CA does for the tests.
func (c *ekCA) issueEK(pub crypto.PublicKey) ([]byte, error) {
	dirName, err := asn1.Marshal(pkix.RDNSequence{{
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 1}, Value: "id:54474600"},
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 2}, Value: "fleetbench"},
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 3}, Value: "id:00010002"},
	}})
	if err != nil {
		return nil, err
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dirName}})
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:           x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{2, 23, 133, 8, 1}},
		ExtraExtensions:    []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: san}},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
}

// deviceHTTP is a fresh HTTPS client, as a device that enrolls has: a new
// TLS connection, trusting the platform CA.
func deviceHTTP(roots *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: "127.0.0.1"},
			MaxIdleConns:    2,
		},
	}
}

// postJSON posts in and decodes a 2xx answer into out.
func postJSON(ctx context.Context, hc *http.Client, url string, in, out any) (int, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return resp.StatusCode, json.Unmarshal(body, out)
}

// enrollTPM enrolls one device whose TPM is dev, as agent/internal/enroll
// does, timing the TPM work and the round trips apart.
func enrollTPM(ctx context.Context, hc *http.Client, base string, dev *tpmdev.Device, token string) (tpm, ek, rtt time.Duration, err error) {
	t0 := time.Now()
	tlsKey, err := dev.TLSKey()
	if err != nil {
		return 0, 0, 0, err
	}
	defer tlsKey.Close()
	signer, err := tlsKey.Signer()
	if err != nil {
		return 0, 0, 0, err
	}
	csr, err := tpmdev.CreateCSR(signer, pkix.Name{CommonName: "tg-agent"})
	if err != nil {
		return 0, 0, 0, err
	}
	tEK := time.Now()
	e, err := dev.EK()
	if err != nil {
		return 0, 0, 0, err
	}
	defer e.Close()
	ek = time.Since(tEK)
	ak, err := dev.AK()
	if err != nil {
		return 0, 0, 0, err
	}
	defer ak.Close()
	cert, err := dev.CertifyKey(tlsKey, ak, enrollbind.QualifyingData(token, csr))
	if err != nil {
		return 0, 0, 0, err
	}
	tpm = time.Since(t0)
	req := wire.EnrollRequest{Token: token, CSR: csr, TPMKind: string(dev.Kind()), TPM: &wire.TPMEvidence{
		EKPublic: e.PublicArea(), EKCert: e.Cert, AKPublic: ak.PublicArea(), TLSKeyPublic: tlsKey.PublicArea(),
		TLSKeyCertify: cert.Attest, TLSKeyCertifySignature: cert.Signature,
	}}
	if e.Cert == nil {
		return 0, 0, 0, fmt.Errorf("the simulator's EK has no certificate")
	}
	t1 := time.Now()
	var ch wire.Challenge
	if _, err := postJSON(ctx, hc, base+pathEnroll, req, &ch); err != nil {
		return 0, 0, 0, err
	}
	rtt = time.Since(t1)
	t2 := time.Now()
	secret, err := dev.ActivateCredential(ak, e, ch.CredentialBlob, ch.EncryptedSecret)
	if err != nil {
		return 0, 0, 0, err
	}
	tpm += time.Since(t2)
	t3 := time.Now()
	var resp wire.EnrollResponse
	if _, err := postJSON(ctx, hc, base+pathActivate, wire.ChallengeAnswer{SessionID: ch.SessionID, Secret: secret}, &resp); err != nil {
		return 0, 0, 0, err
	}
	rtt += time.Since(t3)
	if err := checkIssued(resp, signer.Public()); err != nil {
		return 0, 0, 0, err
	}
	return tpm, ek, rtt, nil
}

// checkIssued makes sure the answer is a certificate for our key, so a
// benchmark never counts a broken enrollment.
func checkIssued(resp wire.EnrollResponse, pub crypto.PublicKey) error {
	b, _ := pem.Decode([]byte(resp.CertificatePEM))
	if b == nil {
		return fmt.Errorf("enroll: no certificate in the answer")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return err
	}
	if k, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) || resp.DeviceID == "" {
		return fmt.Errorf("enroll: certificate is not for our key")
	}
	return nil
}

// benchTPMEnrollment enrolls one freshly manufactured simulator TPM per
// token, sequentially from this process (the simulator is one per
// process; a fresh one has a new EK, so the tenant never sees an EK twice).
func benchTPMEnrollment(ctx context.Context, cp *proc, base string, roots *x509.CertPool, ca *ekCA, tokens []string, cores int) (tpmEnrollResult, error) {
	res := tpmEnrollResult{N: len(tokens)}
	var manufacture, total, tpmT, ekT, rttT time.Duration
	rtts := make([]time.Duration, 0, len(tokens))
	// The server's CPU is read once around the whole loop: per enrollment
	// it is a few ms, below /proc's 10 ms tick.
	u0, err := readUsage(cp.pid())
	if err != nil {
		return res, err
	}
	for _, tok := range tokens {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		tm := time.Now()
		dev, err := tpmsim.Open(ca.issueEK)
		if err != nil {
			return res, err
		}
		manufacture += time.Since(tm)
		hc := deviceHTTP(roots)
		t0 := time.Now()
		tpm, ek, rtt, err := enrollTPM(ctx, hc, base, dev, tok)
		el := time.Since(t0)
		hc.CloseIdleConnections()
		dev.Close()
		if err != nil {
			return res, fmt.Errorf("enroll with the simulator: %w", err)
		}
		total += el
		tpmT += tpm
		ekT += ek
		rttT += rtt
		rtts = append(rtts, rtt)
	}
	u1, err := readUsage(cp.pid())
	if err != nil {
		return res, err
	}
	serverCPU := u1.cpu - u0.cpu
	n := float64(len(tokens))
	each := func(d time.Duration) float64 { return ms(d) / n }
	res.ManufactureMs, res.TotalMs, res.ClientTPMMs, res.EKMs = each(manufacture), each(total), each(tpmT), each(ekT)
	res.ServerRTTMs, res.ServerRTTP50Ms = each(rttT), ms(pct(rtts, 50))
	res.ServerCPUMs = each(serverCPU)
	res.DevicesPerS = 1000 / res.TotalMs
	res.ServerShare = res.ServerRTTMs / res.TotalMs
	if res.ServerCPUMs > 0 {
		res.ServerCapacityPerS = float64(cores) * 1000 / res.ServerCPUMs
	}
	return res, nil
}

// noTPMResult is the concurrent enrollment of the fleet's devices without
// a TPM (fleet policy allow_no_tpm): the server's token, CSR, transaction,
// certificate and audit path without the TPM verification.
type noTPMResult struct {
	N           int     `json:"n"`
	Concurrency int     `json:"concurrency"`
	PerS        float64 `json:"per_s"`
	ServerCPUMs float64 `json:"server_cpu_ms"`
}

// enrollFleet enrolls one software-key device per token with conc workers.
func enrollFleet(ctx context.Context, cp *proc, base string, roots *x509.CertPool, tokens []string, conc int) ([]fleetDevice, noTPMResult, error) {
	type pending struct {
		key *ecdsa.PrivateKey
		csr []byte
	}
	work := make([]pending, len(tokens))
	for i := range work {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, noTPMResult{}, err
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "fleetbench"}}, k)
		if err != nil {
			return nil, noTPMResult{}, err
		}
		work[i] = pending{k, csr}
	}
	devs := make([]fleetDevice, len(tokens))
	errs := make([]error, len(tokens))
	var next atomic.Int64
	u0, err := readUsage(cp.pid())
	if err != nil {
		return nil, noTPMResult{}, err
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(tokens) || ctx.Err() != nil {
					return
				}
				hc := deviceHTTP(roots)
				var resp wire.EnrollResponse
				_, err := postJSON(ctx, hc, base+pathEnroll, wire.EnrollRequest{Token: tokens[i], CSR: work[i].csr, TPMKind: wire.TPMKindNone}, &resp)
				hc.CloseIdleConnections()
				if err == nil {
					err = checkIssued(resp, work[i].key.Public())
				}
				if err != nil {
					errs[i] = err
					continue
				}
				der, _ := x509.MarshalPKCS8PrivateKey(work[i].key)
				devs[i] = fleetDevice{ID: resp.DeviceID, CertPEM: resp.CertificatePEM,
					KeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	u1, err := readUsage(cp.pid())
	if err != nil {
		return nil, noTPMResult{}, err
	}
	for _, err := range errs {
		if err != nil {
			return nil, noTPMResult{}, fmt.Errorf("enroll without a TPM: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, noTPMResult{}, err
	}
	return devs, noTPMResult{N: len(tokens), Concurrency: conc, PerS: float64(len(tokens)) / el.Seconds(),
		ServerCPUMs: ms(u1.cpu-u0.cpu) / float64(len(tokens))}, nil
}
