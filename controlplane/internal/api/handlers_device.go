package api

import (
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// checkQuery refuses query parameters a route does not know, so a typo
// (?fleat=) is an error instead of a silently unfiltered answer.
func checkQuery(q url.Values, known ...string) error {
	var unknown []string
	for k := range q {
		found := false
		for _, want := range known {
			if k == want {
				found = true
				break
			}
		}
		if !found {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return badRequest("unknown query parameter %q (known: %s)", unknown[0], strings.Join(known, ", "))
	}
	return nil
}

// singleQuery returns the one value of a query parameter ("" if absent).
func singleQuery(q url.Values, name string) (string, error) {
	v := q[name]
	switch len(v) {
	case 0:
		return "", nil
	case 1:
		return v[0], nil
	}
	return "", badRequest("query parameter %q given %d times", name, len(v))
}

func (a *handler) listDevices(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if err := checkQuery(q, "fleet", "online", "label"); err != nil {
		return err
	}
	var filter store.DeviceFilter
	fleetRef, err := singleQuery(q, "fleet")
	if err != nil {
		return err
	}
	if fleetRef != "" {
		f, err := resolveFleet(r.Context(), a.store, p.Tenant, fleetRef)
		if err != nil {
			return err
		}
		filter.FleetID = f.ID
	}
	onlineStr, err := singleQuery(q, "online")
	if err != nil {
		return err
	}
	var online *bool
	if onlineStr != "" {
		b, err := strconv.ParseBool(onlineStr)
		if err != nil {
			return badRequest("query parameter \"online\": %q is not true or false", onlineStr)
		}
		online = &b
	}
	want := map[string]string{}
	for _, l := range q["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok || !labelKeyRe.MatchString(k) || !labelValueRe.MatchString(v) {
			return badRequest("query parameter \"label\": %q is not key=value with a valid label key and value", l)
		}
		if prev, dup := want[k]; dup && prev != v {
			return badRequest("query parameter \"label\": key %q wanted with two values", k)
		}
		want[k] = v
	}
	devs, err := a.store.ListDevices(r.Context(), p.Tenant, filter)
	if err != nil {
		return err
	}
	out := make([]Device, 0, len(devs))
next:
	for _, d := range devs {
		if online != nil && d.Online != *online {
			continue
		}
		for k, v := range want {
			if got, ok := d.Labels[k]; !ok || got != v {
				continue next
			}
		}
		out = append(out, NewDevice(d))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *handler) getDevice(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	d, err := a.store.GetDevice(r.Context(), p.Tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, NewDevice(d))
	return nil
}

func (a *handler) patchDevice(w http.ResponseWriter, r *http.Request) error {
	var req DevicePatch
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	var u store.DeviceUpdate
	details := map[string]any{}
	if req.Name != nil {
		if err := validateText("name", *req.Name); err != nil {
			return err
		}
		u.Name, details["name"] = req.Name, *req.Name
	}
	if req.Labels != nil {
		if err := validateLabels(req.Labels); err != nil {
			return err
		}
		u.Labels, details["labels"] = req.Labels, req.Labels
	}
	if len(details) == 0 {
		return badRequest("nothing to change: set \"name\" or \"labels\"")
	}
	id := r.PathValue("id")
	var out store.Device
	err := a.mutate(r, "device.update", func(tx *store.Tx, p principal) (change, error) {
		d, err := tx.UpdateDevice(r.Context(), p.Tenant, id, u)
		if err != nil {
			return change{}, err
		}
		out = d
		return change{target: id, details: details}, nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, NewDevice(out))
	return nil
}

func (a *handler) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var tenant string
	err := a.mutate(r, "device.delete", func(tx *store.Tx, p principal) (change, error) {
		d, err := tx.GetDevice(r.Context(), p.Tenant, id)
		if err != nil {
			return change{}, err
		}
		if err := tx.DeleteDevice(r.Context(), p.Tenant, id); err != nil {
			return change{}, err
		}
		tenant = p.Tenant
		return change{target: id, details: map[string]any{"fleet_id": d.FleetID, "name": d.Name}}, nil
	})
	if err != nil {
		return err
	}
	// Its certificates are revoked with it; end its broker session too.
	a.revoker.DisconnectDevice(tenant, id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *handler) revokeDevice(w http.ResponseWriter, r *http.Request) error {
	var req struct{}
	if err := decodeOptionalBody(r, &req); err != nil {
		return err
	}
	id := r.PathValue("id")
	var out store.Device
	err := a.mutate(r, "device.revoke", func(tx *store.Tx, p principal) (change, error) {
		d, err := tx.RevokeDevice(r.Context(), p.Tenant, id)
		if err != nil {
			return change{}, err
		}
		out = d
		return change{target: id, details: map[string]any{"fleet_id": d.FleetID, "cert_serial": d.CertSerial}}, nil
	})
	if err != nil {
		return err
	}
	// After the commit: the broker's revocation check now refuses the
	// device, so once kicked it cannot come back.
	a.revoker.DisconnectDevice(out.Tenant, id)
	writeJSON(w, http.StatusOK, NewDevice(out))
	return nil
}

// AttestChallengeSent is the answer of POST /api/v1/devices/{id}/attest.
type AttestChallengeSent struct {
	ChallengeID string    `json:"challenge_id"`
	Device      string    `json:"device"`
	PCRs        []int     `json:"pcrs"`
	IssuedAt    time.Time `json:"issued_at"`
	ExpiresAt   time.Time `json:"expires_at"`
}

func (a *handler) attestDevice(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	d, err := a.store.GetDevice(r.Context(), p.Tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	switch {
	case d.Status != store.DeviceEnrolled:
		return errorf(http.StatusConflict, codeConflict, "device %s is %s", d.ID, d.Status)
	case d.TPMKind == store.TPMNone:
		return errorf(http.StatusConflict, codeConflict, "device %s has no TPM to attest", d.ID)
	case a.attester == nil:
		return errorf(http.StatusServiceUnavailable, codeInternal, "attestation is not running on this server")
	}
	c, err := a.attester.ChallengeDevice(r.Context(), p.Tenant, d.ID)
	switch {
	case errors.Is(err, ErrNotAttestable):
		return errorf(http.StatusConflict, codeConflict, "%v", err)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		a.log.Warn("on-demand attestation challenge failed", "tenant", p.Tenant, "device", d.ID, "error", err)
		return errorf(http.StatusServiceUnavailable, codeInternal, "challenge not sent: the broker did not take it")
	case err != nil:
		return err
	}
	pcrs := c.PCRs
	if pcrs == nil {
		pcrs = []int{}
	}
	// The challenge is out; the audit records who asked for it (a failure
	// to record is an error the caller sees, though the device may answer).
	err = a.mutate(r, "device.attest", func(*store.Tx, principal) (change, error) {
		return change{target: d.ID, details: map[string]any{"challenge_id": c.ID, "pcrs": pcrs}}, nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, AttestChallengeSent{ChallengeID: c.ID, Device: d.ID, PCRs: pcrs,
		IssuedAt: c.IssuedAt.UTC(), ExpiresAt: c.ExpiresAt.UTC()})
	return nil
}
