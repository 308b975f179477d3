package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// Device routes of the install pipeline (agent/internal/install/client.go).
const (
	pathDeviceJobs = "/api/v1/device/jobs"
	pathKeyGrants  = "/api/v1/device/key-grants"
)

// rolloutDevice is a simulated device of the rollout phase. It enrolls as
// the agent does with a TPM (soft TPM, kind simulated) and an X-Wing KEM
// key bound into TPM2_Certify, answers attestation challenges with quotes,
// and runs each install job through the control plane as the agent's
// pipeline does — fetch the job, download the blob, request and open the
// key grant, report every state on its jobs/<id> topic — but does no
// device-side work of its own: it neither stores, verifies nor decrypts
// the package, so that the machine's two cores go to the control plane and
// the real agents (whose pipeline is measured separately).
type rolloutDevice struct {
	id  string
	tpm *softTPM
	kem *tgsp.RecipientPrivateKey
	mc  *mqttConn
	hc  *http.Client
	rb  *rolloutBench

	msgs atomic.Int64

	mu      sync.Mutex
	started map[string]bool
	// burstJob is the device's job of the grant-burst rollout: every job
	// notified once the burst has begun is held, not run.
	burstJob string
}

// enrollRollout enrolls d with the full TPM protocol and its KEM key, and
// prepares its mTLS HTTPS client.
func (d *rolloutDevice) enroll(ctx context.Context, hc *http.Client, base string, roots *x509.CertPool, token string) (tls.Certificate, error) {
	kem, err := tgsp.GenerateRecipient(nil)
	if err != nil {
		return tls.Certificate{}, err
	}
	d.kem = kem
	id, cert, err := enrollSoft(ctx, hc, base, d.tpm, token, kem.Public().Bytes())
	if err != nil {
		return tls.Certificate{}, err
	}
	d.id = id
	d.hc = &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}},
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     5 * time.Minute,
	}}
	return cert, nil
}

// subscribeMany subscribes to several filters with one SUBSCRIBE and waits
// for the SUBACK granting all of them; the session must not be receiving
// anything else yet.
func (m *mqttConn) subscribeMany(filters []string, timeout time.Duration) error {
	_ = m.c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = m.c.SetReadDeadline(time.Time{}) }()
	v := binary.BigEndian.AppendUint16(nil, 1)
	for _, f := range filters {
		v = appendString(v, f)
		v = append(v, 1)
	}
	if err := m.write(appendFixedHeader(0x82, v)); err != nil {
		return fmt.Errorf("write SUBSCRIBE: %w", err)
	}
	for {
		typ, _, body, err := m.readPacket()
		if err != nil {
			return fmt.Errorf("read SUBACK: %w", err)
		}
		if typ != pktSuback {
			continue
		}
		if len(body) != 2+len(filters) || binary.BigEndian.Uint16(body) != 1 {
			return fmt.Errorf("SUBACK % x: malformed", body)
		}
		for i, rc := range body[2:] {
			if rc > 2 {
				return fmt.Errorf("SUBACK: %s refused", filters[i])
			}
		}
		return nil
	}
}

// loop reads the device's commands: attestation challenges are answered at
// once, job notifications start the job on a goroutine of its own.
func (d *rolloutDevice) loop() {
	evTopic := mqttacl.AttestationTopic(tenant, d.id)
	for {
		topic, payload, recv, err := d.mc.nextPublish()
		if err != nil {
			d.rb.connLost(d.id, err)
			return
		}
		switch {
		case strings.HasSuffix(topic, "/cmd/attest"):
			var ch wire.AttestChallenge
			if json.Unmarshal(payload, &ch) != nil || ch.Schema != wire.AttestChallengeSchema {
				continue
			}
			ev := wire.AttestEvidence{Schema: wire.AttestEvidenceSchema, MsgID: fmt.Sprintf("%s-e%d", d.id, d.msgs.Add(1)),
				Device: d.id, ChallengeID: ch.ID, Nonce: ch.Nonce}
			var q []byte
			if q, ev.Signature, ev.PCRValues, err = d.tpm.Quote(ch.PCRs, ch.Nonce); err != nil {
				ev.Error = err.Error()
			}
			ev.Quote = q
			b, err := json.Marshal(ev)
			if err != nil {
				continue
			}
			now := time.Now()
			if w := d.rb.watch; w != nil {
				w.evidence(d.id, now)
			}
			if t := d.rb.tracker; t != nil {
				t.challenge(d.id, recv)
				t.evidence(d.id, ch.IssuedAt, now)
			}
			if err := d.mc.publish1(evTopic, b); err != nil {
				d.rb.connLost(d.id, err)
				return
			}
		case strings.HasSuffix(topic, "/cmd/job"):
			var n wire.JobNotify
			if json.Unmarshal(payload, &n) != nil || n.Schema != wire.JobNotifySchema || !mqttacl.ValidID(n.JobID) {
				continue
			}
			d.mu.Lock()
			dup := d.started[n.JobID]
			d.started[n.JobID] = true
			d.mu.Unlock()
			if dup {
				d.rb.renotified.Add(1)
				continue
			}
			d.rb.jobs.Go(func() { d.runJob(n.JobID) })
		}
	}
}

// runJob takes one job through the agent's steps.
func (d *rolloutDevice) runJob(jobID string) {
	ctx := d.rb.ctx
	job, err := d.getJob(ctx, jobID)
	if err != nil {
		d.rb.deviceFailed(d.id, fmt.Errorf("fetch job %s: %w", jobID, err))
		return
	}
	if d.rb.inBurst.Load() {
		d.mu.Lock()
		first := d.burstJob == ""
		if first {
			d.burstJob = job.ID
		}
		d.mu.Unlock()
		if first {
			d.rb.burstReady.Done()
		}
		return
	}
	var reason, detail string // of a refusal
	report := func(state string, downloaded int64) error {
		r := wire.JobReport{Schema: wire.JobReportSchema, MsgID: fmt.Sprintf("%s-r%d", d.id, d.msgs.Add(1)), JobID: job.ID,
			RolloutID: job.RolloutID, Attempt: job.Attempt, State: state, Downloaded: downloaded, At: time.Now().UTC(),
			Reason: reason, Detail: detail}
		if state == wire.JobCommitted {
			r.InstalledName, r.InstalledVersion = job.Package.Name, job.Package.Version
		}
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return d.mc.publish1(mqttacl.JobTopic(tenant, d.id, job.ID), b)
	}
	// A step that fails refuses the job, as the agent does (nothing was
	// installed), so that the rollout ends and counts it.
	refused := func(code string, err error) {
		d.rb.deviceFailed(d.id, fmt.Errorf("job %s: %s: %w", job.ID, code, err))
		reason, detail = code, truncateDetail(err.Error())
		_ = report(wire.JobRefused, 0)
	}
	fail := func(err error) { refused(wire.JobReasonInternal, err) }
	if err := report(wire.JobReceived, 0); err != nil {
		fail(err)
		return
	}
	if err := report(wire.JobDownloading, 0); err != nil {
		fail(err)
		return
	}
	t0 := time.Now()
	n, err := d.download(ctx, job.Package, func(got int64) error { return report(wire.JobDownloading, got) })
	if err != nil {
		refused(wire.JobReasonDownload, err)
		return
	}
	d.rb.downloaded(n, time.Since(t0))
	for _, s := range []string{wire.JobVerifying, wire.JobPolicy, wire.JobKeyGrant} {
		if err := report(s, 0); err != nil {
			fail(err)
			return
		}
	}
	g, lat, err := d.keyGrant(ctx, job.ID, job.Package.ID)
	d.rb.grant(lat, err)
	if err != nil {
		refused(wire.JobReasonKeyGrant, err)
		return
	}
	if err := d.rb.openGrant(g, d.kem); err != nil {
		refused(wire.JobReasonKeyGrant, fmt.Errorf("open the key grant: %w", err))
		return
	}
	for _, s := range []string{wire.JobInstalling, wire.JobSelfTest, wire.JobCommitted} {
		if err := report(s, 0); err != nil {
			fail(err)
			return
		}
	}
}

// truncateDetail bounds a report's detail as the agent does.
func truncateDetail(s string) string {
	if len(s) > 512 {
		s = strings.ToValidUTF8(s[:512], "")
	}
	return s
}

// getJob is GET /api/v1/device/jobs/{id}.
func (d *rolloutDevice) getJob(ctx context.Context, id string) (wire.Job, error) {
	var j wire.Job
	if err := d.doJSON(ctx, http.MethodGet, pathDeviceJobs+"/"+url.PathEscape(id), nil, &j); err != nil {
		return j, err
	}
	if j.ID != id || j.Schema != wire.JobSchema {
		return j, fmt.Errorf("answer names job %q (schema %q)", j.ID, j.Schema)
	}
	return j, nil
}

// keyGrant is POST /api/v1/device/key-grants; it returns the grant and the
// request's latency.
func (d *rolloutDevice) keyGrant(ctx context.Context, jobID, pkgID string) ([]byte, time.Duration, error) {
	var g wire.KeyGrant
	t0 := time.Now()
	err := d.doJSON(ctx, http.MethodPost, pathKeyGrants, wire.KeyGrantRequest{JobID: jobID, PackageID: pkgID}, &g)
	lat := time.Since(t0)
	if err == nil && (g.PackageID != pkgID || len(g.Grant) == 0) {
		err = fmt.Errorf("key grant for package %q with %d bytes", g.PackageID, len(g.Grant))
	}
	return g.Grant, lat, err
}

func (d *rolloutDevice) doJSON(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.rb.cp.httpsURL+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	return json.Unmarshal(data, out)
}

// download GETs the package blob as the agent does — resuming with a Range
// request after an interruption — and counts the bytes instead of storing
// them; progress is called every 5 s (the agent's ProgressInterval).
func (d *rolloutDevice) download(ctx context.Context, ref wire.PackageRef, progress func(int64) error) (int64, error) {
	u := ref.URL
	if u == "" {
		u = "/api/v1/device/packages/" + ref.ID
	}
	if !strings.HasPrefix(u, "/") {
		return 0, fmt.Errorf("package url %q is not a path on the control plane", ref.URL)
	}
	var got int64
	last := time.Now()
	buf := make([]byte, 256<<10)
	for attempt := 1; ; attempt++ {
		err := func() error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.rb.cp.httpsURL+u, nil)
			if err != nil {
				return err
			}
			if got > 0 {
				req.Header.Set("Range", fmt.Sprintf("bytes=%d-", got))
			}
			resp, err := d.hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			switch {
			case got == 0 && resp.StatusCode == http.StatusOK, got > 0 && resp.StatusCode == http.StatusPartialContent:
			default:
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				return fmt.Errorf("GET %s: %d %s", u, resp.StatusCode, strings.TrimSpace(string(b)))
			}
			for {
				n, err := resp.Body.Read(buf)
				got += int64(n)
				if time.Since(last) >= 5*time.Second {
					last = time.Now()
					if err := progress(got); err != nil {
						return err
					}
				}
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
			}
		}()
		if err == nil {
			break
		}
		if attempt >= 5 || ctx.Err() != nil {
			return got, err
		}
		d.rb.resumed.Add(1)
		time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
	}
	if got != ref.Size {
		return got, fmt.Errorf("downloaded %d bytes of %d", got, ref.Size)
	}
	return got, nil
}
