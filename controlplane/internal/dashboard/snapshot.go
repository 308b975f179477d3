package dashboard

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// view is what the page shows of one tenant at one moment.
type view struct {
	Summary     summaryView
	Fleets      []fleetView
	Devices     []deviceView
	MoreDevices int // enrolled devices not listed (past maxDevicesShown)
	Rollouts    []rolloutView
}

type summaryView struct {
	Fleets, Devices, Online            int
	Trusted, Untrusted, Stale, Unknown int
	Quarantined, Revoked               int
	ActiveRollouts, RolloutsTotal      int
}

type fleetView struct {
	ID, Name                                            string
	Devices, Online, Trusted, Untrusted, Stale, Unknown int
	Revoked, ActiveRollouts                             int
	AllowSimulatedTPM, AllowNoTPM                       bool
}

type deviceView struct {
	ID, Name, FleetName, DeviceType, TPMKind string
	Online, Revoked, Quarantined             bool
	LastSeen                                 time.Time
	Verdict                                  string
	VerdictAt                                time.Time
	Reasons                                  string
}

type rolloutView struct {
	ID, Package, FleetName, State string
	Reason, Detail, CreatedBy     string
	CurrentWave                   int // 1-based
	Waves                         []waveView
	CreatedAt, UpdatedAt          time.Time
	Succeeded, Failed, Total      int
}

type waveView struct {
	Number, Percent                            int
	Size, Pending, InFlight, Succeeded, Failed int
	Done                                       int
	Current                                    bool
}

// load reads tenant's view from the store.
func load(ctx context.Context, st Fleets, tenant string) (view, error) {
	var v view
	fleets, err := st.ListFleets(ctx, tenant)
	if err != nil {
		return v, fmt.Errorf("list fleets: %w", err)
	}
	devices, err := st.ListDevices(ctx, tenant, store.DeviceFilter{})
	if err != nil {
		return v, fmt.Errorf("list devices: %w", err)
	}
	states, err := st.ListAttestationStates(ctx, tenant, store.AttestationFilter{})
	if err != nil {
		return v, fmt.Errorf("list attestation states: %w", err)
	}
	rollouts, err := st.ListRollouts(ctx, tenant, store.RolloutFilter{})
	if err != nil {
		return v, fmt.Errorf("list rollouts: %w", err)
	}
	verdicts := make(map[string]store.AttestationState, len(states))
	for _, s := range states {
		verdicts[s.DeviceID] = s
	}
	fleetIdx := make(map[string]int, len(fleets))
	for i, f := range fleets {
		fleetIdx[f.ID] = i
		v.Fleets = append(v.Fleets, fleetView{ID: f.ID, Name: f.Name,
			AllowSimulatedTPM: f.Policy.AllowSimulatedTPM, AllowNoTPM: f.Policy.AllowNoTPM})
	}
	fleetName := func(id string) string {
		if i, ok := fleetIdx[id]; ok {
			return fleets[i].Name
		}
		return id
	}
	for _, d := range devices {
		st := verdicts[d.ID]
		verdict := st.State
		if verdict == "" {
			verdict = store.VerdictUnknown
		}
		var fv *fleetView
		if i, ok := fleetIdx[d.FleetID]; ok {
			fv = &v.Fleets[i]
		}
		if d.Status == store.DeviceRevoked {
			v.Summary.Revoked++
			if fv != nil {
				fv.Revoked++
			}
		} else {
			v.Summary.Devices++
			if d.Online {
				v.Summary.Online++
			}
			if d.Quarantined || st.Quarantined {
				v.Summary.Quarantined++
			}
			switch verdict {
			case store.VerdictTrusted:
				v.Summary.Trusted++
			case store.VerdictUntrusted:
				v.Summary.Untrusted++
			case store.VerdictStale:
				v.Summary.Stale++
			default:
				v.Summary.Unknown++
			}
			if fv != nil {
				fv.Devices++
				if d.Online {
					fv.Online++
				}
				switch verdict {
				case store.VerdictTrusted:
					fv.Trusted++
				case store.VerdictUntrusted:
					fv.Untrusted++
				case store.VerdictStale:
					fv.Stale++
				default:
					fv.Unknown++
				}
			}
		}
		reasons := string(st.Reasons)
		if reasons == "null" || reasons == "[]" {
			reasons = ""
		}
		if len(v.Devices) >= maxDevicesShown {
			v.MoreDevices++
			continue
		}
		v.Devices = append(v.Devices, deviceView{
			ID: d.ID, Name: d.Name, FleetName: fleetName(d.FleetID), DeviceType: d.DeviceType, TPMKind: string(d.TPMKind),
			Online: d.Online && d.Status != store.DeviceRevoked, Revoked: d.Status == store.DeviceRevoked,
			Quarantined: d.Quarantined || st.Quarantined, LastSeen: d.LastSeenAt,
			Verdict: string(verdict), VerdictAt: st.VerdictAt, Reasons: reasons,
		})
	}
	v.Summary.Fleets = len(fleets)
	v.Summary.RolloutsTotal = len(rollouts)
	for _, r := range rollouts {
		if !r.State.Finished() {
			v.Summary.ActiveRollouts++
			if i, ok := fleetIdx[r.FleetID]; ok {
				v.Fleets[i].ActiveRollouts++
			}
		}
	}
	if len(rollouts) > maxRolloutsShown {
		rollouts = rollouts[:maxRolloutsShown] // newest first
	}
	for _, r := range rollouts {
		jobs, err := st.ListRolloutJobs(ctx, tenant, r.ID)
		if err != nil {
			return v, fmt.Errorf("jobs of rollout %s: %w", r.ID, err)
		}
		rv := rolloutView{ID: r.ID, Package: r.PackageName + "@" + r.PackageVersion, FleetName: fleetName(r.FleetID),
			State: string(r.State), Reason: r.Reason, Detail: r.Detail, CreatedBy: r.CreatedBy,
			CurrentWave: r.CurrentWave + 1, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
		for _, w := range store.RolloutWaves(r, jobs) {
			wv := waveView{Number: w.Index + 1, Percent: w.Percent, Size: w.Size, Pending: w.Pending, InFlight: w.InFlight,
				Succeeded: w.Succeeded, Failed: w.Failed, Done: w.Succeeded + w.Failed,
				Current: w.Index == r.CurrentWave && !r.State.Finished()}
			rv.Succeeded += w.Succeeded
			rv.Failed += w.Failed
			rv.Total += w.Size
			rv.Waves = append(rv.Waves, wv)
		}
		v.Rollouts = append(v.Rollouts, rv)
	}
	return v, nil
}

// snapshots caches each tenant's rendered view briefly, so that all of a
// tenant's streams (and page loads) share one read of the store per tick.
type snapshots struct {
	st Fleets
	mu sync.Mutex
	m  map[string]*snapEntry
}

type snapEntry struct {
	mu       sync.Mutex // held while loading: one read at a time per tenant
	at       time.Time
	parts    *rendered
	lastUsed time.Time
}

// snapshotIdle is how long an unused tenant entry is kept.
const snapshotIdle = 5 * time.Minute

func newSnapshots(st Fleets) *snapshots { return &snapshots{st: st, m: map[string]*snapEntry{}} }

// get returns tenant's rendered view, read from the store unless the cached
// one is younger than maxAge.
func (s *snapshots) get(ctx context.Context, tenant string, maxAge time.Duration) (*rendered, error) {
	now := time.Now()
	s.mu.Lock()
	e, ok := s.m[tenant]
	if !ok {
		e = &snapEntry{}
		s.m[tenant] = e
	}
	e.lastUsed = now
	for t, other := range s.m {
		if now.Sub(other.lastUsed) > snapshotIdle {
			delete(s.m, t)
		}
	}
	s.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.parts != nil && time.Since(e.at) < maxAge {
		return e.parts, nil
	}
	v, err := load(ctx, s.st, tenant)
	if err != nil {
		return nil, err
	}
	parts, err := renderParts(v)
	if err != nil {
		return nil, err
	}
	e.parts, e.at = parts, time.Now()
	return parts, nil
}
