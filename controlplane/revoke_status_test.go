package controlplane_test

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
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// api calls the operator API as the harness admin (or enrolls, without a
// key) over HTTPS and decodes a 2xx answer into out.
func api(t *testing.T, h *controlplanetest.Harness, method, path, key string, in, out any) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.BaseURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: h.TLSConfig(nil)}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s %s", method, path, resp.Status, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
}

func newKeyAndCSR(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "test"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

func tlsCert(t *testing.T, chainPEM string, key *ecdsa.PrivateKey) tls.Certificate {
	t.Helper()
	var c tls.Certificate
	for rest := []byte(chainPEM); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c.Certificate = append(c.Certificate, b.Bytes)
	}
	if len(c.Certificate) == 0 {
		t.Fatalf("no certificate in %q", chainPEM)
	}
	c.PrivateKey = key
	return c
}

// mqttConnect connects to the harness's broker over mTLS as cert; opts may
// add a Will.
func mqttConnect(t *testing.T, h *controlplanetest.Harness, cert tls.Certificate, clientID string, opts func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("ssl://" + h.MQTTAddr).SetClientID(clientID).
		SetTLSConfig(h.TLSConfig(&cert)).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectTimeout(10 * time.Second).SetOrderMatters(false)
	if opts != nil {
		opts(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt connect %s: %v", clientID, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// freshStatus subscribes a new operator connection to topic and returns
// the retained status it receives first.
func freshStatus(t *testing.T, h *controlplanetest.Harness, operator tls.Certificate, topic string) (wire.Status, error) {
	t.Helper()
	got := make(chan paho.Message, 4)
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	c := mqttConnect(t, h, operator, fmt.Sprintf("watcher-%x", suffix), nil)
	defer c.Disconnect(0)
	if tok := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { got <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
	select {
	case m := <-got:
		var s wire.Status
		if !m.Retained() {
			return s, fmt.Errorf("first message on %s is not retained: %s", topic, m.Payload())
		}
		return s, json.Unmarshal(m.Payload(), &s)
	case <-time.After(5 * time.Second):
		return wire.Status{}, errors.New("no retained status on " + topic)
	}
}

// TestRevokedDeviceRetainedStatus: a device (enrolled without a TPM, over
// the API) is online with a retained status over mTLS MQTT; after an
// operator revokes or deletes it through the API, a fresh subscriber to its
// status topic gets offline, marked revoked, with the device's session —
// never online — and the device is cut off (and, revoked, listed offline).
func TestRevokedDeviceRetainedStatus(t *testing.T) {
	h := controlplanetest.Start(t)

	var fleet struct{ ID string }
	api(t, h, http.MethodPost, "/api/v1/fleets", h.AdminKey, map[string]any{"name": "edge", "policy": map[string]any{"allow_no_tpm": true}}, &fleet)
	opKey, opCSR := newKeyAndCSR(t)
	var creds struct {
		CertificatePEM string `json:"certificate_pem"`
	}
	api(t, h, http.MethodPost, "/api/v1/mqtt/credentials", h.AdminKey,
		map[string]string{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: opCSR}))}, &creds)
	opCert := tlsCert(t, creds.CertificatePEM, opKey)

	for _, tc := range []struct {
		action  string
		session uint64
		cutOff  func(t *testing.T, device string)
	}{
		{"revoke", 5, func(t *testing.T, device string) {
			api(t, h, http.MethodPost, "/api/v1/devices/"+device+"/revoke", h.AdminKey, nil, nil)
		}},
		{"delete", 9, func(t *testing.T, device string) {
			api(t, h, http.MethodDelete, "/api/v1/devices/"+device, h.AdminKey, nil, nil)
		}},
	} {
		t.Run(tc.action, func(t *testing.T) {
			var tok struct{ Token string }
			api(t, h, http.MethodPost, "/api/v1/fleets/"+fleet.ID+"/enrollment-tokens", h.AdminKey, map[string]any{}, &tok)
			devKey, csr := newKeyAndCSR(t)
			var enrolled wire.EnrollResponse
			api(t, h, http.MethodPost, "/api/v1/enroll", "", wire.EnrollRequest{Token: tok.Token, CSR: csr, TPMKind: wire.TPMKindNone}, &enrolled)
			device := enrolled.DeviceID
			devCert := tlsCert(t, enrolled.CertificatePEM, devKey)

			// The device as the agent behaves: a Will for offline, then a
			// retained online, both of its current session.
			topic := mqttacl.StatusTopic(h.Tenant, device)
			online, _ := json.Marshal(wire.Status{Schema: wire.StatusSchema, Device: device, State: wire.StateOnline, Session: tc.session, TS: time.Now().UTC()})
			will, _ := json.Marshal(wire.Status{Schema: wire.StatusSchema, Device: device, State: wire.StateOffline, Session: tc.session})
			dev := mqttConnect(t, h, devCert, device, func(o *paho.ClientOptions) { o.SetBinaryWill(topic, will, 1, true) })
			if tok := dev.Publish(topic, 1, true, online); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish online: %v", tok.Error())
			}
			if s, err := freshStatus(t, h, opCert, topic); err != nil || s.State != wire.StateOnline || s.Session != tc.session {
				t.Fatalf("before revocation a watcher sees %+v, %v; want online session %d", s, err, tc.session)
			}
			waitDevice(t, h, device, func(d deviceJSON, _ int) bool { return d.Online })

			tc.cutOff(t, device)

			// Right after the API answered, the retained status is already
			// not online; the device's Will may briefly be what is
			// retained, and the control plane puts the revoked status back
			// over it.
			if s, err := freshStatus(t, h, opCert, topic); err != nil || s.State != wire.StateOffline {
				t.Fatalf("right after %s a watcher sees %+v, %v; want offline", tc.action, s, err)
			}
			want := wire.Status{Schema: wire.StatusSchema, Device: device, State: wire.StateOffline, Session: tc.session, Revoked: true}
			deadline := time.Now().Add(10 * time.Second)
			for {
				s, err := freshStatus(t, h, opCert, topic)
				if err != nil {
					t.Fatal(err)
				}
				ts := s.TS
				s.TS = time.Time{}
				if s == want && !ts.IsZero() {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after %s a watcher sees %+v, want %+v", tc.action, s, want)
				}
				time.Sleep(50 * time.Millisecond)
			}
			// wire.LatestStatus keeps it final for a watcher that saw the
			// online status, whatever arrives later.
			var on wire.Status
			_ = json.Unmarshal(online, &on)
			if got := wire.LatestStatus(wire.LatestStatus(on, want), on); got != want {
				t.Fatalf("LatestStatus after the revoked status: %+v", got)
			}
			if tc.action == "revoke" {
				waitDevice(t, h, device, func(d deviceJSON, _ int) bool { return !d.Online && d.Status == "revoked" && d.TPMKind == "none" })
			} else {
				waitDevice(t, h, device, func(_ deviceJSON, status int) bool { return status == http.StatusNotFound })
			}
			for deadline := time.Now().Add(5 * time.Second); dev.IsConnectionOpen(); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the device is still connected")
				}
			}
		})
	}
}

type deviceJSON struct {
	ID      string `json:"id"`
	TPMKind string `json:"tpm_kind"`
	Status  string `json:"status"`
	Online  bool   `json:"online"`
}

// waitDevice polls GET /api/v1/devices/{id} until ok accepts the device
// and the HTTP status.
func waitDevice(t *testing.T, h *controlplanetest.Harness, id string, ok func(deviceJSON, int) bool) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: h.TLSConfig(nil)}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, h.BaseURL+"/api/v1/devices/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+h.AdminKey)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var d deviceJSON
		_ = json.Unmarshal(raw, &d)
		if ok(d, resp.StatusCode) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s: %d %s did not reach the expected state", id, resp.StatusCode, raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
