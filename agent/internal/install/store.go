package install

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Store is the transactional storage the pipeline's state lives in:
// *state.DB and *bbolt.DB satisfy it. Every transition is one Update, which
// bbolt fsyncs before it returns.
type Store interface {
	Update(fn func(*bolt.Tx) error) error
	View(fn func(*bolt.Tx) error) error
}

// Layout of the "install" bucket (format 1):
//
//	meta      format (uint64 BE)
//	jobs      job id → jobRecord (JSON)
//	slots     "active", "previous" → Slot (JSON)
//	highest   package name → the highest version ever committed (string)
var (
	bucketInstall = []byte("install")
	bucketMeta    = []byte("meta")
	bucketJobs    = []byte("jobs")
	bucketSlots   = []byte("slots")
	bucketHighest = []byte("highest")

	keyFormat   = []byte("format")
	keyActive   = []byte("active")
	keyPrevious = []byte("previous")
)

const formatVersion = 1

// keepTerminal is how many finished job records are kept, so a control
// plane that asks again about a finished job gets its answer.
const keepTerminal = 128

// ErrNewerFormat means the install bucket was written by a newer agent.
var ErrNewerFormat = errors.New("install state written by a newer tg-agent")

// Slot is one installed package: the encrypted .tgsp kept in the state
// directory and what is needed to load it again after a restart. The
// package stays encrypted on disk; Grant is the DEK wrapped to the
// device's KEM key, useless without it.
type Slot struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	PackageID string `json:"package_id"` // registry id: SHA-256 of the file
	// Path is the encrypted .tgsp, relative to the package directory (so a
	// state directory restored elsewhere stays valid).
	Path string `json:"path"`
	// Publisher is the signer key (PEM) that verified the package, and
	// VerifiedAt the time it was verified at: a reload re-checks the
	// signature and every hash against them (expiry gates installation,
	// not running a committed model).
	Publisher  []byte    `json:"publisher"`
	VerifiedAt time.Time `json:"verified_at"`
	Grant      []byte    `json:"grant"`
	JobID      string    `json:"job_id"`
	// Committed is false while the slot is on trial (activated, self-test
	// not yet passed).
	Committed   bool      `json:"committed"`
	ActivatedAt time.Time `json:"activated_at"`
}

// slotPair is the active and previous slot; either may be nil.
type slotPair struct {
	Active   *Slot `json:"active,omitempty"`
	Previous *Slot `json:"previous,omitempty"`
}

// jobRecord is a job's persisted progress. Field names are on-disk format:
// add fields, never rename.
type jobRecord struct {
	Seq    uint64   `json:"seq"` // acceptance order
	Job    wire.Job `json:"job"`
	State  string   `json:"state"`
	Reason string   `json:"reason,omitempty"`
	Detail string   `json:"detail,omitempty"`
	// Reported is the last state whose report is in the outbox; a state
	// not yet reported is reported again after a restart.
	Reported   string `json:"reported,omitempty"`
	Downloaded int64  `json:"downloaded,omitempty"`
	// Grant is the key grant once received (wrapped to the device's key).
	Grant []byte `json:"grant,omitempty"`
	// Slot is the slot the job activates, set in the activation
	// transaction; Restore is what the slots were before it, put back if
	// the job fails after activation.
	Slot      *Slot     `json:"slot,omitempty"`
	Restore   *slotPair `json:"restore,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// initStore creates the buckets on first use and refuses a newer format.
func initStore(s Store) error {
	return s.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketInstall)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketMeta, bucketJobs, bucketSlots, bucketHighest} {
			if _, err := root.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := root.Bucket(bucketMeta)
		if raw := meta.Get(keyFormat); len(raw) == 8 {
			if v := binary.BigEndian.Uint64(raw); v > formatVersion {
				return fmt.Errorf("%w (format %d, supported %d)", ErrNewerFormat, v, formatVersion)
			}
			return nil
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], formatVersion)
		return meta.Put(keyFormat, b[:])
	})
}

func sub(tx *bolt.Tx, name []byte) *bolt.Bucket { return tx.Bucket(bucketInstall).Bucket(name) }

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("install state record %s: %w", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

func getJob(tx *bolt.Tx, id string) (*jobRecord, error) {
	var rec jobRecord
	ok, err := getJSON(sub(tx, bucketJobs), []byte(id), &rec)
	if err != nil || !ok {
		return nil, err
	}
	return &rec, nil
}

func putJob(tx *bolt.Tx, rec *jobRecord) error {
	return putJSON(sub(tx, bucketJobs), []byte(rec.Job.ID), rec)
}

func getSlots(tx *bolt.Tx) (slotPair, error) {
	var p slotPair
	b := sub(tx, bucketSlots)
	for _, s := range []struct {
		key []byte
		dst **Slot
	}{{keyActive, &p.Active}, {keyPrevious, &p.Previous}} {
		var sl Slot
		ok, err := getJSON(b, s.key, &sl)
		if err != nil {
			return p, err
		}
		if ok {
			*s.dst = &sl
		}
	}
	return p, nil
}

func putSlots(tx *bolt.Tx, p slotPair) error {
	b := sub(tx, bucketSlots)
	for _, s := range []struct {
		key []byte
		v   *Slot
	}{{keyActive, p.Active}, {keyPrevious, p.Previous}} {
		var err error
		if s.v == nil {
			err = b.Delete(s.key)
		} else {
			err = putJSON(b, s.key, s.v)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func getHighest(tx *bolt.Tx, name string) string {
	return string(sub(tx, bucketHighest).Get([]byte(name)))
}

func putHighest(tx *bolt.Tx, name, version string) error {
	return sub(tx, bucketHighest).Put([]byte(name), []byte(version))
}

// listJobs returns every job record in acceptance order.
func listJobs(tx *bolt.Tx) ([]*jobRecord, error) {
	var out []*jobRecord
	err := sub(tx, bucketJobs).ForEach(func(k, v []byte) error {
		var rec jobRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("install state job %s: %w", k, err)
		}
		out = append(out, &rec)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, err
}

// pruneJobs deletes the oldest terminal records beyond keepTerminal.
func pruneJobs(tx *bolt.Tx) error {
	jobs, err := listJobs(tx)
	if err != nil {
		return err
	}
	var terminal []*jobRecord
	for _, r := range jobs {
		if wire.JobTerminal(r.State) {
			terminal = append(terminal, r)
		}
	}
	b := sub(tx, bucketJobs)
	for len(terminal) > keepTerminal {
		if err := b.Delete([]byte(terminal[0].Job.ID)); err != nil {
			return err
		}
		terminal = terminal[1:]
	}
	return nil
}

// ReadSlots returns the active and previous slot recorded in s (either nil
// when empty), for status reports; it needs no running Installer and
// changes nothing.
func ReadSlots(s Store) (active, previous *Slot, err error) {
	err = s.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketInstall) == nil || sub(tx, bucketSlots) == nil {
			return nil // nothing installed yet
		}
		p, err := getSlots(tx)
		active, previous = p.Active, p.Previous
		return err
	})
	return active, previous, err
}
