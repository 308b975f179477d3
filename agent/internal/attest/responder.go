package attest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/tensorguard/tensorguardflow/agent/internal/outbox"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Error values of wire.AttestEvidence.Error the verifier acts on.
const (
	ErrorNoTPM   = "no TPM"
	ErrorExpired = "challenge expired"
)

// Defaults of Config.
const (
	DefaultMaxEventLog = 4 << 20
	DefaultMinInterval = time.Second
	DefaultSkew        = 5 * time.Minute
	DefaultQueueSize   = 8
)

// recentIDs is how many challenge ids are remembered for de-duplication.
const recentIDs = 256

// TPM is what the responder needs of the device's TPM; *tpmdev.Device
// implements it.
type TPM interface {
	AK() (*tpmdev.Key, error)
	Quote(ak *tpmdev.Key, hash tpm2.Algorithm, pcrs []int, nonce []byte) (*tpmdev.Quote, error)
}

var _ TPM = (*tpmdev.Device)(nil)

// Outbox is where evidence goes; *outbox.Outbox implements it. Errors
// wrapping outbox.ErrOutboxFull and outbox.ErrTooLarge mean nothing was
// stored and are not fatal; any other error is.
type Outbox interface {
	EnqueueFunc(topic string, qos byte, retained bool, build func(msgID string) ([]byte, error)) (uint64, error)
}

var _ Outbox = (*outbox.Outbox)(nil)

// Clock is the time source of expiry checks and the rate limit.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config configures a Responder. Device, Topic and Outbox are required.
type Config struct {
	Device string // the device id, echoed in the evidence
	Topic  string // the device's attestation topic
	Outbox Outbox

	// TPM quotes. Leave it nil (an untyped nil, not a nil *tpmdev.Device)
	// for a device enrolled without a TPM: every challenge is then answered
	// with ErrorNoTPM.
	TPM TPM

	// EventLogPath is the binary TCG measurement log to send with quotes;
	// empty sends none (swtpm and the simulator are not measured by the
	// platform's firmware, so the host's log would only mislead).
	EventLogPath string
	MaxEventLog  int64 // bytes; default DefaultMaxEventLog

	MinInterval time.Duration // between two answers; default DefaultMinInterval
	Skew        time.Duration // tolerated clock difference to the control plane; default DefaultSkew
	QueueSize   int           // challenges waiting for the rate limit; default DefaultQueueSize

	Clock  Clock        // default the real clock
	Logger *slog.Logger // default slog.Default()
}

func (c *Config) validate() error {
	if c.Device == "" || c.Topic == "" || c.Outbox == nil {
		return errors.New("attest: device, topic and outbox are required")
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.MaxEventLog <= 0 {
		c.MaxEventLog = DefaultMaxEventLog
	}
	if c.MinInterval <= 0 {
		c.MinInterval = DefaultMinInterval
	}
	if c.Skew <= 0 {
		c.Skew = DefaultSkew
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Responder answers attestation challenges. Create it with New, give
// Handle to the MQTT session's Subscribe, and run Run as a task.
type Responder struct {
	cfg  Config
	log  *slog.Logger
	wake chan struct{} // capacity 1: "the queue may hold challenges"

	mu        sync.Mutex
	queue     []*wire.AttestChallenge
	seen      recentSet
	coalesced int // challenges dropped from the full queue since the last answer

	// Owned by Run's goroutine.
	ak       *tpmdev.Key
	reported map[string]bool // event-log problems already logged
}

// New validates cfg and returns an idle Responder.
func New(cfg Config) (*Responder, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Responder{
		cfg:      cfg,
		log:      cfg.Logger,
		wake:     make(chan struct{}, 1),
		seen:     newRecentSet(recentIDs),
		reported: map[string]bool{},
	}, nil
}

// Handle is the presence.Handler for the device's cmd/attest topic. It only
// queues the challenge (Run answers it) and never blocks on the TPM.
func (r *Responder) Handle(_ context.Context, m presence.Message) {
	if err := r.HandleChallenge(m.Payload); err != nil {
		r.log.Debug("attestation challenge dropped", "err", err, "redelivery", m.Duplicate)
	}
}

// HandleChallenge parses payload and queues the challenge for Run. It
// returns an error wrapping ErrMalformed or ErrDuplicate when it drops the
// challenge instead.
func (r *Responder) HandleChallenge(payload []byte) error {
	c, err := ParseChallenge(payload)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if !r.seen.add(c.ID) {
		r.mu.Unlock()
		return fmt.Errorf("%w: id %q", ErrDuplicate, c.ID)
	}
	if len(r.queue) >= r.cfg.QueueSize {
		r.queue[0] = nil
		r.queue = r.queue[1:]
		r.coalesced++
	}
	r.queue = append(r.queue, c)
	r.mu.Unlock()
	r.signal()
	return nil
}

func (r *Responder) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run answers queued challenges, at most one per MinInterval, until ctx
// ends (nil) or the outbox fails with a storage error.
func (r *Responder) Run(ctx context.Context) error {
	defer r.closeAK()
	var next time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		}
		// Wait before taking a challenge off the queue, so those arriving
		// meanwhile coalesce there instead of piling up here.
		if d := next.Sub(r.cfg.Clock.Now()); d > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-r.cfg.Clock.After(d):
			}
		}
		answered, err := r.answerNext()
		if err != nil {
			return err
		}
		if answered {
			next = r.cfg.Clock.Now().Add(r.cfg.MinInterval)
		}
	}
}

// answerNext answers the oldest queued challenge, if any, and re-arms the
// wake-up when more are waiting.
func (r *Responder) answerNext() (bool, error) {
	r.mu.Lock()
	if len(r.queue) == 0 {
		r.mu.Unlock()
		return false, nil
	}
	c := r.queue[0]
	r.queue[0] = nil
	r.queue = r.queue[1:]
	more, coalesced := len(r.queue) > 0, r.coalesced
	r.coalesced = 0
	r.mu.Unlock()
	if more {
		r.signal()
	}
	if coalesced > 0 {
		r.log.Warn("attestation challenges arrive faster than the rate limit; dropped the oldest waiting ones",
			"dropped", coalesced, "min_interval", r.cfg.MinInterval)
	}
	return true, r.answer(c)
}

// answer builds the evidence for c and enqueues it.
func (r *Responder) answer(c *wire.AttestChallenge) error {
	ev := &wire.AttestEvidence{
		Schema:      wire.AttestEvidenceSchema,
		Device:      r.cfg.Device,
		ChallengeID: c.ID,
		Nonce:       c.Nonce,
	}
	switch now := r.cfg.Clock.Now(); {
	case now.After(c.ExpiresAt.Add(r.cfg.Skew)):
		ev.Error = ErrorExpired
		r.log.Info("attestation challenge expired", "challenge", c.ID, "expires_at", c.ExpiresAt, "skew", r.cfg.Skew)
	case r.cfg.TPM == nil:
		ev.Error = ErrorNoTPM
	default:
		q, err := r.quote(c)
		if err != nil {
			ev.Error = err.Error()
			r.log.Warn("attestation quote failed", "challenge", c.ID, "err", err)
			break
		}
		ev.Quote, ev.Signature = q.Attest, q.Signature
		ev.PCRValues = make(map[int][]byte, len(q.PCRs))
		for i, v := range q.PCRs {
			ev.PCRValues[int(i)] = v
		}
		ev.EventLog = r.eventLog()
	}
	return r.enqueue(ev)
}

// quote quotes with the AK, loading it on first use and keeping it loaded.
// A failure unloads the AK and is retried once with a fresh one: the TPM
// may have restarted (its handles are gone) or a PCR changed between the
// quote and the read-back.
func (r *Responder) quote(c *wire.AttestChallenge) (*tpmdev.Quote, error) {
	for attempt := 1; ; attempt++ {
		q, err := r.quoteOnce(c)
		if err == nil {
			return q, nil
		}
		r.closeAK()
		if attempt == 2 {
			return nil, err
		}
		r.log.Debug("attestation quote failed; retrying with a fresh AK", "challenge", c.ID, "err", err)
	}
}

func (r *Responder) quoteOnce(c *wire.AttestChallenge) (*tpmdev.Quote, error) {
	if r.ak == nil {
		ak, err := r.cfg.TPM.AK()
		if err != nil {
			return nil, fmt.Errorf("load attestation key: %w", err)
		}
		r.ak = ak
	}
	q, err := r.cfg.TPM.Quote(r.ak, tpm2.AlgSHA256, c.PCRs, c.Nonce)
	if err != nil {
		return nil, err
	}
	if len(q.PCRs) != len(c.PCRs) {
		return nil, fmt.Errorf("tpm2_quote: TPM returned %d of %d PCRs of the SHA-256 bank (bank not allocated?)", len(q.PCRs), len(c.PCRs))
	}
	return q, nil
}

func (r *Responder) closeAK() {
	if r.ak != nil {
		r.ak.Close()
		r.ak = nil
	}
}

// enqueue puts ev into the outbox with the entry's msg_id.
func (r *Responder) enqueue(ev *wire.AttestEvidence) error {
	for {
		payload, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("encode evidence: %w", err)
		}
		_, err = r.cfg.Outbox.EnqueueFunc(r.cfg.Topic, 1, false, func(msgID string) ([]byte, error) {
			return withMsgID(payload, msgID)
		})
		switch {
		case err == nil:
			r.log.Debug("attestation evidence queued", "challenge", ev.ChallengeID, "error", ev.Error,
				"pcrs", len(ev.PCRValues), "event_log_bytes", len(ev.EventLog))
			return nil
		case errors.Is(err, outbox.ErrTooLarge) && ev.EventLog != nil:
			r.log.Warn("attestation evidence too large for the outbox; sending it without the event log",
				"challenge", ev.ChallengeID, "event_log_bytes", len(ev.EventLog), "err", err)
			ev.EventLog = nil
		case errors.Is(err, outbox.ErrOutboxFull), errors.Is(err, outbox.ErrTooLarge):
			// Let a redelivery of the same challenge be answered.
			r.mu.Lock()
			r.seen.remove(ev.ChallengeID)
			r.mu.Unlock()
			r.log.Warn("attestation evidence dropped", "challenge", ev.ChallengeID, "err", err)
			return nil
		default:
			return fmt.Errorf("queue attestation evidence: %w", err)
		}
	}
}

// withMsgID sets msg_id in payload, a marshalled wire.AttestEvidence whose
// MsgID is empty. It splices instead of marshalling again because the
// outbox calls it inside its write transaction and the payload may hold a
// multi-megabyte event log: encoding/json writes the fields in declaration
// order, so the payload starts with the schema and the empty msg_id.
func withMsgID(payload []byte, msgID string) ([]byte, error) {
	prefix := `{"schema":"` + wire.AttestEvidenceSchema + `","msg_id":"`
	if !bytes.HasPrefix(payload, []byte(prefix+`"`)) {
		return nil, errors.New("evidence does not start with schema and an empty msg_id")
	}
	id, err := json.Marshal(msgID)
	if err != nil {
		return nil, err
	}
	rest := payload[len(prefix)+1:]
	out := make([]byte, 0, len(prefix)-1+len(id)+len(rest))
	out = append(out, prefix[:len(prefix)-1]...)
	out = append(out, id...)
	return append(out, rest...), nil
}

// recentSet remembers the last n ids added, forgetting the oldest first.
type recentSet struct {
	ids   map[string]struct{}
	order []string // ring buffer
	next  int
}

func newRecentSet(n int) recentSet {
	return recentSet{ids: make(map[string]struct{}, n), order: make([]string, n)}
}

// add records id and reports whether it was new.
func (s *recentSet) add(id string) bool {
	if _, ok := s.ids[id]; ok {
		return false
	}
	if old := s.order[s.next]; old != "" {
		delete(s.ids, old)
	}
	s.order[s.next] = id
	s.next = (s.next + 1) % len(s.order)
	s.ids[id] = struct{}{}
	return true
}

// remove forgets id; its slot in the ring is reused in turn.
func (s *recentSet) remove(id string) {
	delete(s.ids, id)
	for i, v := range s.order {
		if v == id {
			s.order[i] = ""
		}
	}
}
