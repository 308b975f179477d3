package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
	"github.com/tensorguard/tensorguardflow/agent/internal/outbox"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// Sentinel errors.
var (
	// ErrNoModel: no model is active (nothing installed yet, or the active
	// slot could not be loaded).
	ErrNoModel = errors.New("no active model")
	// ErrAlreadyRunning: Run was called while another Run is active.
	ErrAlreadyRunning = errors.New("install: already running")
)

// Runtime loads a model from its files, held in memory only
// (*inference.Selector: ONNX Runtime or TensorRT).
type Runtime interface {
	// Load builds a model from files (path in the package → plaintext),
	// which hold meta.Model and the spec's extra files. It must not write
	// them anywhere, and refuses a meta.Runtime it does not run.
	Load(files map[string][]byte, meta ModelMeta) (Model, error)
}

// Model is a loaded model (inference.Model). Infer may be called from
// several goroutines; Close is called once, after the last Infer returned.
type Model = inference.Model

// ModelMeta tells the runtime what it loads.
type ModelMeta = inference.Meta

// KeyOpener opens a key grant (a tgsp recipient stanza wrapping the
// package's DEK to this device) with the device's KEM key, which never
// leaves it (sealed by the TPM). pkg has been verified.
type KeyOpener interface {
	OpenGrant(pkg *tgsp.Package, grant []byte) (*tgsp.DEK, error)
}

// RecipientKey is a KeyOpener over a plain tgsp recipient key (tests,
// development, and the shape of what a TPM-sealed key unseals to).
type RecipientKey struct{ Key *tgsp.RecipientPrivateKey }

// OpenGrant implements KeyOpener.
func (k RecipientKey) OpenGrant(pkg *tgsp.Package, grant []byte) (*tgsp.DEK, error) {
	return pkg.OpenGrant(grant, k.Key)
}

// Policy decides whether a verified package may be installed (the fleet's
// OPA policy). Reasons explain a denial; an error refuses the package too
// (fail closed).
type Policy interface {
	Evaluate(ctx context.Context, input PolicyInput) (allow bool, reasons []string, err error)
}

// PolicyInput is what the policy sees, as Go values and, marshalled, as
// the JSON input document of a Rego policy.
type PolicyInput struct {
	Manifest *tgsp.Manifest `json:"manifest"`
	DPCert   *tgsp.DPCert   `json:"dp_cert,omitempty"`
	Evidence *tgsp.Evidence `json:"evidence,omitempty"`
	Device   DeviceFacts    `json:"device"`
	// Attestation is the device's last attestation verdict, when the
	// agent knows it.
	Attestation *wire.Verdict `json:"attestation,omitempty"`
	// Installed is the package active now, if any.
	Installed *InstalledPackage `json:"installed,omitempty"`
	Job       PolicyJob         `json:"job"`
	Now       time.Time         `json:"now"`
	// Publishers are the key ids of the publishers the job pins for the
	// device (wire.Job.Publishers): input.publishers of docs/policy.md.
	Publishers []string `json:"publishers,omitempty"`
}

// DeviceFacts describe the device to the policy.
type DeviceFacts struct {
	DeviceID     string            `json:"device_id"`
	TenantID     string            `json:"tenant_id"`
	FleetID      string            `json:"fleet_id"`
	DeviceType   string            `json:"device_type"`
	Labels       map[string]string `json:"labels,omitempty"`
	TPMKind      string            `json:"tpm_kind,omitempty"`
	AgentVersion string            `json:"agent_version,omitempty"`
}

// InstalledPackage names the active slot's package.
type InstalledPackage struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	PackageID string `json:"package_id"`
}

// PolicyJob names the job asking for the install.
type PolicyJob struct {
	ID        string `json:"id"`
	RolloutID string `json:"rollout_id"`
	Kind      string `json:"kind"`
	Attempt   int    `json:"attempt"`
}

// Outbox carries job reports; *outbox.Outbox implements it.
type Outbox interface {
	EnqueueFunc(topic string, qos byte, retained bool, build func(msgID string) ([]byte, error)) (uint64, error)
}

var _ Outbox = (*outbox.Outbox)(nil)

// Defaults of Config.
const (
	DefaultDownloadAttempts = 10
	DefaultProgressInterval = 5 * time.Second
	DefaultRetryInterval    = 30 * time.Second
	DefaultMaxPackageBytes  = 4 << 30
	DefaultMaxModelBytes    = 1 << 30
)

// Config configures an Installer. Store, Outbox, Client, Facts and
// PackageDir are required.
type Config struct {
	Store  Store
	Outbox Outbox
	Client *Client
	// Facts describes the device (ids, device type, labels); called for
	// every job, so reloaded labels take effect.
	Facts func() DeviceFacts
	// PackageDir holds downloads (<id>.partial) and the slots' packages
	// (<id>.tgsp), encrypted as shipped; created 0700.
	PackageDir string

	Runtime Runtime // nil: every install fails with ACTIVATION
	// OnServe, when set, is told each time a model starts (serving true)
	// or stops serving; it must not call back into the Installer.
	OnServe func(slot Slot, m Model, serving bool)
	Keys    KeyOpener // nil: every install is refused with KEY_GRANT_REFUSED
	Policy  Policy    // nil: allow
	// Verdict returns the device's last attestation verdict, or nil.
	Verdict func() *wire.Verdict

	DownloadAttempts int              // consecutive failures before DOWNLOAD (also key-grant requests); default 10
	Backoff          presence.Backoff // between retries; default 1s→60s
	ProgressInterval time.Duration    // between "downloading" reports; default 5s
	RetryInterval    time.Duration    // retry of failed job fetches and reports; default 30s
	MaxPackageBytes  int64            // default 4 GiB
	MaxModelBytes    int64            // plaintext held in memory per model; default 1 GiB
	Now              func() time.Time
	Logger           *slog.Logger

	// hook, when set (tests), is asked at every checkpoint of the pipeline
	// whether to stop there as if the process had been killed.
	hook func(point string) bool
}

func (c *Config) setDefaults() {
	if c.DownloadAttempts <= 0 {
		c.DownloadAttempts = DefaultDownloadAttempts
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = DefaultProgressInterval
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = DefaultRetryInterval
	}
	if c.MaxPackageBytes <= 0 {
		c.MaxPackageBytes = DefaultMaxPackageBytes
	}
	if c.MaxModelBytes <= 0 {
		c.MaxModelBytes = DefaultMaxModelBytes
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Installer is the install pipeline. Create it with New, give Handle to
// the MQTT session's Subscribe for cmd/job, call Kick on every (re)connect,
// and run Run as a task.
type Installer struct {
	cfg    Config
	log    *slog.Logger
	tenant string
	device string

	wake    chan struct{} // capacity 1
	catchUp atomic.Bool   // list the open jobs at the next iteration
	running atomic.Bool

	mu      sync.Mutex
	pending map[string]bool // job ids notified, not yet fetched

	serveMu sync.RWMutex
	serving *loadedModel

	// Owned by Run's goroutine.
	lastProgress time.Time
	retry        bool
}

type loadedModel struct {
	slot  Slot
	model Model
}

// New checks cfg and returns an idle Installer.
func New(cfg Config) (*Installer, error) {
	if cfg.Store == nil || cfg.Outbox == nil || cfg.Client == nil || cfg.Facts == nil || cfg.PackageDir == "" {
		return nil, errors.New("install: store, outbox, client, facts and package directory are required")
	}
	cfg.setDefaults()
	if cfg.hook == nil {
		cfg.hook = faultHook(cfg.Logger) // nil unless built with the faultinject tag
	}
	f := cfg.Facts()
	if !mqttacl.ValidTenant(f.TenantID) || !mqttacl.ValidID(f.DeviceID) {
		return nil, fmt.Errorf("install: invalid tenant %q or device %q", f.TenantID, f.DeviceID)
	}
	return &Installer{
		cfg:     cfg,
		log:     cfg.Logger,
		tenant:  f.TenantID,
		device:  f.DeviceID,
		wake:    make(chan struct{}, 1),
		pending: map[string]bool{},
	}, nil
}

// Handle takes a JobNotify from cmd/job. The notification carries no
// authority: it only makes the installer fetch the job over mTLS.
func (in *Installer) Handle(_ context.Context, m presence.Message) {
	var n wire.JobNotify
	if err := json.Unmarshal(m.Payload, &n); err != nil || n.Schema != wire.JobNotifySchema || !mqttacl.ValidID(n.JobID) {
		in.log.Debug("job notification dropped", "topic", m.Topic, "err", err)
		return
	}
	in.mu.Lock()
	in.pending[n.JobID] = true
	in.mu.Unlock()
	in.signal()
}

// Kick makes the installer list the device's open jobs (call it on every
// MQTT connect: a notification may have been missed while offline).
func (in *Installer) Kick() {
	in.catchUp.Store(true)
	in.signal()
}

func (in *Installer) signal() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// Active returns the slot whose model is serving.
func (in *Installer) Active() (Slot, bool) {
	in.serveMu.RLock()
	defer in.serveMu.RUnlock()
	if in.serving == nil {
		return Slot{}, false
	}
	return in.serving.slot, true
}

// WithServing calls fn with the serving model and its slot, or returns
// ErrNoModel. The model is not replaced (nor closed) while fn runs, so fn
// should only run inferences.
func (in *Installer) WithServing(fn func(slot Slot, m Model) error) error {
	in.serveMu.RLock()
	defer in.serveMu.RUnlock()
	if in.serving == nil {
		return ErrNoModel
	}
	return fn(in.serving.slot, in.serving.model)
}

// serve makes lm the serving model and closes the one it replaces.
func (in *Installer) serve(lm *loadedModel) {
	in.serveMu.Lock()
	old := in.serving
	in.serving = lm
	in.serveMu.Unlock()
	if in.cfg.OnServe != nil {
		if old != nil {
			in.cfg.OnServe(old.slot, old.model, false)
		}
		if lm != nil {
			in.cfg.OnServe(lm.slot, lm.model, true)
		}
	}
	if old != nil {
		if err := old.model.Close(); err != nil {
			in.log.Warn("close model", "name", old.slot.Name, "version", old.slot.Version, "err", err)
		}
	}
}

// Run recovers interrupted jobs, loads the active slot, and then processes
// jobs until ctx ends (nil) or the state store fails (its error).
func (in *Installer) Run(ctx context.Context) error {
	if !in.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer in.running.Store(false)
	defer in.serve(nil)
	if err := in.recover(ctx); err != nil {
		return in.exit(ctx, err)
	}
	in.catchUp.Store(true)
	for {
		in.retry = false
		if err := in.iterate(ctx); err != nil {
			return in.exit(ctx, err)
		}
		var retry <-chan time.Time
		var t *time.Timer
		if in.retry {
			t = time.NewTimer(in.cfg.RetryInterval)
			retry = t.C
		}
		select {
		case <-ctx.Done():
		case <-in.wake:
		case <-retry:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (in *Installer) exit(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, errCrash) {
		return nil
	}
	return err
}

// iterate reports what is unreported, takes new jobs and runs every open
// job to a terminal state.
func (in *Installer) iterate(ctx context.Context) error {
	if err := in.flushReports(); err != nil {
		return err
	}
	in.mu.Lock()
	ids := make([]string, 0, len(in.pending))
	for id := range in.pending {
		ids = append(ids, id)
	}
	in.mu.Unlock()
	for _, id := range ids {
		job, err := in.cfg.Client.Job(ctx, id)
		switch {
		case err == nil:
			if err := in.accept(job, true); err != nil {
				return err
			}
		case ctx.Err() != nil:
			return ctx.Err()
		case !temporary(err):
			// 404, or 410 JOB_CANCELLED (an aborted rollout's job not
			// started): nothing to do.
			in.log.Info("notified job dropped", "job", id, "err", err)
		default:
			in.log.Warn("fetch job failed; will retry", "job", id, "err", err)
			in.retry = true
			continue
		}
		in.mu.Lock()
		delete(in.pending, id)
		in.mu.Unlock()
	}
	if in.catchUp.Swap(false) {
		jobs, err := in.cfg.Client.Jobs(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			in.log.Warn("list jobs failed; will retry", "err", err)
			in.catchUp.Store(true)
			in.retry = true
		}
		for _, j := range jobs {
			if err := in.accept(j, false); err != nil {
				return err
			}
		}
	}
	if err := in.processOpen(ctx); err != nil {
		return err
	}
	return in.flushReports() // finished jobs asked about again
}
