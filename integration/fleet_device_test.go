package integration

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"
	bolt "go.etcd.io/bbolt"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// enrollNoTPM enrolls a device without a TPM over the real wire (POST
// /api/v1/enroll, tpm_kind none, a software key) into a fleet that allows
// it, and returns its id and a client certificate for it.
func enrollNoTPM(t *testing.T, cp *cpProc, token string) (string, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "no-tpm"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(wire.EnrollRequest{Token: token, CSR: csr, TPMKind: wire.TPMKindNone})
	resp, err := cp.httpClient(nil).Post(cp.baseURL+"/api/v1/enroll", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("enroll without TPM: %s %s", resp.Status, raw)
	}
	var er wire.EnrollResponse
	if err := json.Unmarshal(raw, &er); err != nil || !strings.HasPrefix(er.DeviceID, "dev-") {
		t.Fatalf("enroll response %v: %s", err, raw)
	}
	return er.DeviceID, certWithKey(t, []byte(er.CertificatePEM), key)
}

// certWithKey pairs a PEM chain with its private key (a crypto.Signer).
func certWithKey(t *testing.T, chainPEM []byte, key any) tls.Certificate {
	t.Helper()
	var c tls.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c.Certificate = append(c.Certificate, b.Bytes)
	}
	if len(c.Certificate) == 0 {
		t.Fatalf("no certificate in %q", chainPEM)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	c.Leaf, c.PrivateKey = leaf, key
	return c
}

// agentCertificate returns a stopped agent's device certificate (from its
// bbolt state file) with its TLS key, which lives in the simulator TPM of
// that seed: the simulator derives the same primary key from the same
// seed, as the agent's own restart does. Only one simulator may be open in
// a process; it is closed at cleanup.
func agentCertificate(t *testing.T, a *agentProcess, seed int64) tls.Certificate {
	t.Helper()
	db, err := bolt.Open(a.state, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open %s's state: %v", a.name, err)
	}
	var id struct {
		DeviceID     string `json:"device_id"`
		CertChainPEM []byte `json:"cert_chain_pem"`
	}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("identity"))
		if b == nil {
			return fmt.Errorf("no identity bucket")
		}
		return json.Unmarshal(b.Get([]byte("current")), &id)
	})
	_ = db.Close()
	if err != nil {
		t.Fatalf("read %s's identity: %v", a.name, err)
	}
	sim, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		t.Fatal(err)
	}
	dev := tpmdev.New(sim, tpmdev.KindSimulated)
	t.Cleanup(func() { _ = dev.Close() })
	key, err := dev.TLSKey()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(key.Close)
	signer, err := key.Signer()
	if err != nil {
		t.Fatal(err)
	}
	c := certWithKey(t, id.CertChainPEM, signer)
	if pub, ok := c.Leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(signer.Public()) {
		t.Fatalf("%s's certificate is not for the simulator's TLS key of seed %d", a.name, seed)
	}
	return c
}

// deviceSelf calls GET /api/v1/device/self with cert.
func deviceSelf(cp *cpProc, cert tls.Certificate) (int, []byte, error) {
	c := cp.httpClient(&cert)
	defer c.CloseIdleConnections()
	resp, err := c.Get(cp.baseURL + "/api/v1/device/self")
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// TestRevokedDevice: `tgctl device revoke` drops the agent's MQTT
// connection at once; its reconnects are refused at the TLS handshake; its
// certificate no longer opens the device API.
func TestRevokedDevice(t *testing.T) {
	cp := startControlPlane(t, cpOptions{})
	cp.tgctl("fleet", "create", "edge", "--allow-simulated-tpm")
	token, _ := cp.token("edge")
	const seed = 401
	a := newAgent(t, cp, "agent", token, fmt.Sprintf("{simulator: true, simulator_seed: %d}", seed))
	a.start()
	st := a.waitConnected(0)
	dev := st.DeviceID

	// The agent's certificate, read while it is stopped (the state file is
	// locked while it runs), opens the device API.
	a.proc.stop(t, 15*time.Second)
	cert := agentCertificate(t, a, seed)
	code, body, err := deviceSelf(cp, cert)
	if err != nil || code != http.StatusOK || !strings.Contains(string(body), `"id":"`+dev+`"`) {
		t.Fatalf("device/self before revocation: %d %s %v", code, body, err)
	}
	a.start()
	st = a.waitConnected(st.Session)
	eventually(t, 10*time.Second, "device online", func() error {
		if d := cp.devices(); len(d) != 1 || !d[0].Online {
			return fmt.Errorf("devices %+v", d)
		}
		return nil
	})

	out := cp.tgctl("device", "revoke", dev)
	if !strings.Contains(out, "revoked") {
		t.Fatalf("tgctl device revoke: %s", out)
	}
	// Dropped at once, and every reconnect refused during the handshake.
	eventually(t, 10*time.Second, "agent loses its connection and fails to reconnect", func() error {
		log := a.proc.log.String()
		lost := strings.Index(log, "mqtt connection lost")
		if lost < 0 {
			return fmt.Errorf("no lost connection logged")
		}
		failed := strings.Index(log[lost:], "mqtt connect failed")
		if failed < 0 {
			return fmt.Errorf("no failed reconnect logged")
		}
		line, _, _ := strings.Cut(log[lost+failed:], "\n")
		if !strings.Contains(line, "remote error: tls: bad certificate") {
			return fmt.Errorf("reconnect failed for another reason than TLS: %s", line)
		}
		return nil
	})
	if s, err := a.status(); err != nil || s.Connected {
		t.Fatalf("agent status after revocation: %+v %v", s, err)
	}
	eventually(t, 10*time.Second, "device list: revoked and offline", func() error {
		d := cp.devices()
		if len(d) != 1 || d[0].ID != dev || d[0].Status != "revoked" || d[0].Online {
			return fmt.Errorf("devices %+v", d)
		}
		return nil
	})
	if _, err := dialMQTT(t, cp.mqttAddr, cp.caPool, cert, dev); err == nil || !strings.Contains(err.Error(), "tls: bad certificate") {
		t.Fatalf("MQTT connect with the revoked certificate: %v (want a TLS refusal)", err)
	}
	if code, body, err := deviceSelf(cp, cert); err == nil || !strings.Contains(err.Error(), "tls: bad certificate") {
		t.Fatalf("device/self with the revoked certificate: %d %s %v (want a TLS refusal)", code, body, err)
	}

	a.proc.stop(t, 15*time.Second)
	cp.shutdown()
}
