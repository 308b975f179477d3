package outbox

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Sentinel errors; returned errors wrap them.
var (
	// ErrOutboxFull means the entry does not fit and nothing can be evicted
	// to make room (the outbox is full of critical entries). Nothing was
	// stored; retry later.
	ErrOutboxFull = errors.New("outbox full of critical entries")

	// ErrTooLarge means a single entry is larger than Config.MaxBytes.
	ErrTooLarge = errors.New("outbox entry larger than the outbox")

	// ErrNewerFormat means the outbox bucket was written by a newer agent.
	ErrNewerFormat = errors.New("outbox written by a newer tg-agent")
)

// Publisher delivers one message. For QoS 1 it must return nil only after
// the broker's PUBACK; any error means "not known to be delivered".
type Publisher interface {
	Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error
}

// Store is the transactional storage the outbox lives in: *bbolt.DB and
// *state.DB satisfy it.
type Store interface {
	Update(fn func(*bolt.Tx) error) error
	View(fn func(*bolt.Tx) error) error
}

// Class decides what the full policy may drop.
type Class uint8

const (
	// ClassCritical entries (job results, attestation, status) are never
	// evicted.
	ClassCritical Class = 1
	// ClassTelemetry entries are evicted oldest first when the outbox is full.
	ClassTelemetry Class = 2
)

func (c Class) String() string {
	switch c {
	case ClassCritical:
		return "critical"
	case ClassTelemetry:
		return "telemetry"
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// ClassifyByTopic is the default classifier for the topics of DESIGN §5:
// telemetry may be dropped, everything else (status, attestation, jobs/<id>,
// unknown topics) is critical.
func ClassifyByTopic(topic string) Class {
	if strings.HasSuffix(topic, "/telemetry") {
		return ClassTelemetry
	}
	return ClassCritical
}

// Clock is the time source of the retry backoff.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config sets the bounds and the retry behaviour. Zero fields take defaults.
type Config struct {
	MaxEntries int   // default 10000
	MaxBytes   int64 // topic+payload bytes; default 8 MiB
	// RetryMin and RetryMax bound the exponential backoff between failed
	// publishes (±20% jitter). Defaults 1s and 60s.
	RetryMin, RetryMax time.Duration
	Classify           func(topic string) Class // default ClassifyByTopic
	Clock              Clock                    // default the real clock
	Rand               func() float64           // in [0,1); default math/rand/v2
	Logger             *slog.Logger             // default slog.Default()
}

func (c *Config) setDefaults() {
	if c.MaxEntries <= 0 {
		c.MaxEntries = 10000
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 8 << 20
	}
	if c.RetryMin <= 0 {
		c.RetryMin = time.Second
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(60*time.Second, c.RetryMin)
	}
	if c.Classify == nil {
		c.Classify = ClassifyByTopic
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.Rand == nil {
		c.Rand = mrand.Float64
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Stats is a snapshot for metrics and `tg-agent status`.
type Stats struct {
	Pending      int    // entries waiting
	PendingBytes int64  // their topic+payload bytes
	Dropped      uint64 // telemetry entries evicted by the full policy, ever (persisted)
	Rejected     uint64 // Enqueue calls refused with ErrOutboxFull since Open
	Enqueued     uint64 // entries accepted since Open
	Delivered    uint64 // entries acknowledged and deleted since Open
	PublishFails uint64 // failed publish attempts since Open
}

// Layout of the "outbox" bucket: nested "entries" (key: big-endian seq) and
// "meta" (format version, outbox id, counters kept in the same transactions
// as the entries so they can never disagree).
var (
	bucketOutbox  = []byte("outbox")
	bucketEntries = []byte("entries")
	bucketMeta    = []byte("meta")

	keyFormat  = []byte("format")
	keyID      = []byte("id")
	keyCount   = []byte("count")
	keyBytes   = []byte("bytes")
	keyDropped = []byte("dropped")
)

const formatVersion = 1

// Outbox is a durable FIFO. Enqueue is safe for concurrent use; run one Run.
type Outbox struct {
	store Store
	cfg   Config
	log   *slog.Logger
	id    string

	wake  chan struct{} // capacity 1: "there may be new entries"
	retry chan struct{} // capacity 1: "retry now, don't wait out the backoff"

	enqueued, delivered, rejected, publishFails atomic.Uint64

	// mu serialises writers so the eviction decision and the counters are
	// computed against the same state the commit applies to.
	mu sync.Mutex
}

// Open prepares the outbox bucket in store (creating it on first use) and
// returns the outbox. It does not start delivery: call Run.
func Open(store Store, cfg Config) (*Outbox, error) {
	cfg.setDefaults()
	o := &Outbox{store: store, cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1), retry: make(chan struct{}, 1)}
	err := store.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketOutbox)
		if err != nil {
			return err
		}
		if _, err := root.CreateBucketIfNotExists(bucketEntries); err != nil {
			return err
		}
		meta, err := root.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := getU64(meta, keyFormat); v > formatVersion {
			return fmt.Errorf("%w (format %d, supported %d)", ErrNewerFormat, v, formatVersion)
		}
		if id := meta.Get(keyID); id != nil {
			o.id = string(id)
			return nil
		}
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		o.id = hex.EncodeToString(b[:])
		if err := meta.Put(keyID, []byte(o.id)); err != nil {
			return err
		}
		return putU64(meta, keyFormat, formatVersion)
	})
	if err != nil {
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	return o, nil
}

// ID is this outbox's random identity, the prefix of every msg_id.
func (o *Outbox) ID() string { return o.id }

// MsgID is the message id of the entry with sequence number seq.
func (o *Outbox) MsgID(seq uint64) string { return o.id + "-" + strconv.FormatUint(seq, 10) }

// Enqueue durably appends a message and returns its sequence number. The
// message is on disk when Enqueue returns nil.
func (o *Outbox) Enqueue(topic string, payload []byte, qos byte, retained bool) (uint64, error) {
	return o.EnqueueFunc(topic, qos, retained, func(string) ([]byte, error) { return payload, nil })
}

// EnqueueFunc is Enqueue for payloads that carry their own msg_id: build is
// called (inside the write transaction, so keep it cheap) with the id this
// entry will have, and returns the payload to store.
func (o *Outbox) EnqueueFunc(topic string, qos byte, retained bool, build func(msgID string) ([]byte, error)) (uint64, error) {
	if topic == "" || len(topic) > math.MaxUint16 {
		return 0, errors.New("outbox: enqueue: topic must be 1..65535 bytes")
	}
	if qos > 2 {
		return 0, fmt.Errorf("outbox: enqueue %s: invalid qos %d", topic, qos)
	}
	class := o.cfg.Classify(topic)

	o.mu.Lock()
	defer o.mu.Unlock()
	var seq uint64
	var evicted int
	err := o.store.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketOutbox)
		if root == nil {
			return errors.New("outbox bucket missing")
		}
		entries, meta := root.Bucket(bucketEntries), root.Bucket(bucketMeta)
		next, err := entries.NextSequence()
		if err != nil {
			return err
		}
		payload, err := build(o.MsgID(next))
		if err != nil {
			return fmt.Errorf("build payload: %w", err)
		}
		e := entry{class: class, qos: qos, retained: retained, enqueuedAt: o.cfg.Clock.Now(), topic: topic, payload: payload}
		size := e.size()
		if size > o.cfg.MaxBytes {
			return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, size, o.cfg.MaxBytes)
		}
		count, bytes := int(getU64(meta, keyCount)), int64(getU64(meta, keyBytes))
		if count+1 > o.cfg.MaxEntries || bytes+size > o.cfg.MaxBytes {
			var freedN int
			var freedB int64
			var victims [][]byte
			c := entries.Cursor()
			for k, v := c.First(); k != nil && (count-freedN+1 > o.cfg.MaxEntries || bytes-freedB+size > o.cfg.MaxBytes); k, v = c.Next() {
				old, err := decodeEntry(v)
				if err != nil {
					return fmt.Errorf("entry %d: %w", binary.BigEndian.Uint64(k), err)
				}
				if old.class != ClassTelemetry {
					continue
				}
				victims = append(victims, k)
				freedN++
				freedB += old.size()
			}
			if count-freedN+1 > o.cfg.MaxEntries || bytes-freedB+size > o.cfg.MaxBytes {
				return ErrOutboxFull // the transaction rolls back: nothing evicted
			}
			for _, k := range victims {
				if err := entries.Delete(k); err != nil {
					return err
				}
			}
			count, bytes, evicted = count-freedN, bytes-freedB, freedN
			if err := putU64(meta, keyDropped, getU64(meta, keyDropped)+uint64(freedN)); err != nil {
				return err
			}
		}
		if err := entries.Put(seqKey(next), e.encode()); err != nil {
			return err
		}
		if err := putU64(meta, keyCount, uint64(count+1)); err != nil {
			return err
		}
		seq = next
		return putU64(meta, keyBytes, uint64(bytes+size))
	})
	if errors.Is(err, ErrOutboxFull) {
		o.rejected.Add(1)
	}
	if err != nil {
		return 0, fmt.Errorf("outbox: enqueue %s: %w", topic, err)
	}
	if evicted > 0 {
		o.log.Warn("outbox full: dropped oldest telemetry", "dropped", evicted)
	}
	o.enqueued.Add(1)
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return seq, nil
}

// Kick cuts a running retry backoff short: call it when the connection
// came back (presence.Config.OnConnect) so queued entries go out at once.
func (o *Outbox) Kick() {
	select {
	case o.retry <- struct{}{}:
	default:
	}
}

// Stats returns counters; Pending and Dropped come from the database.
func (o *Outbox) Stats() (Stats, error) {
	s := Stats{
		Enqueued:     o.enqueued.Load(),
		Delivered:    o.delivered.Load(),
		Rejected:     o.rejected.Load(),
		PublishFails: o.publishFails.Load(),
	}
	err := o.store.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketOutbox).Bucket(bucketMeta)
		s.Pending = int(getU64(meta, keyCount))
		s.PendingBytes = int64(getU64(meta, keyBytes))
		s.Dropped = getU64(meta, keyDropped)
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("outbox: stats: %w", err)
	}
	return s, nil
}

// Run delivers entries to pub in order until ctx ends (then it returns nil).
// It returns an error only when the database fails.
func (o *Outbox) Run(ctx context.Context, pub Publisher) error {
	failures := 0
	for ctx.Err() == nil {
		seq, e, ok, err := o.head()
		if err != nil {
			return fmt.Errorf("outbox: read head: %w", err)
		}
		if !ok {
			select {
			case <-ctx.Done():
				return nil
			case <-o.wake:
				continue
			}
		}
		if err := pub.Publish(ctx, e.topic, e.qos, e.retained, e.payload); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			o.publishFails.Add(1)
			d := o.backoff(failures)
			o.log.Warn("outbox publish failed; retrying", "seq", seq, "topic", e.topic, "attempt", failures, "retry_in", d, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-o.retry:
			case <-o.cfg.Clock.After(d):
			}
			continue
		}
		failures = 0
		if err := o.remove(seq); err != nil {
			return fmt.Errorf("outbox: delete delivered entry %d (it will be sent again): %w", seq, err)
		}
		o.delivered.Add(1)
	}
	return nil
}

// backoff returns RetryMin·2^(n-1), capped at RetryMax, ±20% jitter.
func (o *Outbox) backoff(n int) time.Duration {
	d := o.cfg.RetryMax
	if n < 32 {
		if x := o.cfg.RetryMin << (n - 1); x > 0 && x < d {
			d = x
		}
	}
	return time.Duration(float64(d) * (0.8 + 0.4*o.cfg.Rand()))
}

func (o *Outbox) head() (uint64, entry, bool, error) {
	var (
		seq uint64
		e   entry
		ok  bool
	)
	err := o.store.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketOutbox).Bucket(bucketEntries).Cursor().First()
		if k == nil {
			return nil
		}
		var err error
		if e, err = decodeEntry(v); err != nil {
			return fmt.Errorf("entry %d: %w", binary.BigEndian.Uint64(k), err)
		}
		// decodeEntry copies: the slices must outlive the transaction.
		seq, ok = binary.BigEndian.Uint64(k), true
		return nil
	})
	return seq, e, ok, err
}

// remove deletes a delivered entry; it may already be gone (evicted while it
// was being published).
func (o *Outbox) remove(seq uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.store.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketOutbox)
		entries, meta := root.Bucket(bucketEntries), root.Bucket(bucketMeta)
		k := seqKey(seq)
		v := entries.Get(k)
		if v == nil {
			return nil
		}
		e, err := decodeEntry(v)
		if err != nil {
			return err
		}
		if err := entries.Delete(k); err != nil {
			return err
		}
		if err := putU64(meta, keyCount, getU64(meta, keyCount)-1); err != nil {
			return err
		}
		return putU64(meta, keyBytes, getU64(meta, keyBytes)-uint64(e.size()))
	})
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

func getU64(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putU64(b *bolt.Bucket, k []byte, n uint64) error {
	v := make([]byte, 8)
	binary.BigEndian.PutUint64(v, n)
	return b.Put(k, v)
}
