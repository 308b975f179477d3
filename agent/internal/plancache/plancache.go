package plancache

import (
	"container/list"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
)

// Errors; returned errors wrap them.
var (
	// ErrMiss: no usable entry for the key. Every Get that returns no plan
	// returns an error wrapping ErrMiss, corrupt entries included, so a
	// caller that only wants a plan rebuilds on errors.Is(err, ErrMiss).
	ErrMiss = errors.New("plancache: miss")
	// ErrCorrupt: the entry for the key existed but did not open (changed,
	// truncated, another key's file, written under another cache key, or
	// of an unknown format). It has been removed. Errors wrapping it also
	// wrap ErrMiss; a caller logs them, since they should not happen.
	ErrCorrupt = errors.New("plancache: corrupt entry removed")
	// ErrTooLarge: Put of a plan whose entry would not fit in MaxBytes.
	ErrTooLarge = errors.New("plancache: plan larger than the cache")
	// ErrInvalidKey: a Key without a TensorRT version or device identity,
	// or with an absurdly long field.
	ErrInvalidKey = errors.New("plancache: invalid key")
	// ErrNoSealer: Open without a TPM. Plans hold model weights, and
	// without a TPM there is no key to protect them with that is not
	// itself on the same disk, so a device without one keeps no plans.
	ErrNoSealer = errors.New("plancache: a TPM is required to keep plans at rest")
)

// Sealer is the device's TPM (*tpmdev.Device), the same shape as
// agent/internal/keys.Sealer.
type Sealer interface {
	Seal(data []byte) (tpmdev.SealedBlob, error)
	Unseal(blob tpmdev.SealedBlob) ([]byte, error)
}

var _ Sealer = (*tpmdev.Device)(nil)

// DefaultMaxBytes bounds the cache when Options.MaxBytes is zero: a few
// plans of a mid-size model on a Jetson, whose disk is often eMMC.
const DefaultMaxBytes = 2 << 30

// Files in the cache directory.
const (
	keyFileName = "key.sealed" // the cache key, sealed by the TPM (tpmdev.SealedBlob encoding)
	entrySuffix = ".plan"      // <hex sha256 of the key encoding>.plan
	tempPrefix  = ".tmp-"      // a file being written; renamed into place when complete
	cacheKeyLen = 32           // AES-256
)

// Options configure a Cache. The zero value is usable.
type Options struct {
	// MaxBytes bounds the total size of the entry files; 0 means
	// DefaultMaxBytes. The least recently used entries are evicted to stay
	// under it, and a plan whose entry alone exceeds it is not stored.
	MaxBytes int64
	// Logger receives what the cache handles itself: a key reset (the TPM
	// refused the sealed key) and eviction failures. nil discards.
	Logger *slog.Logger
	// Now is the clock used to order entries across restarts (their
	// modification times); nil means time.Now.
	Now func() time.Time
}

// Cache is a directory of encrypted plans. It is safe for concurrent use
// by the goroutines of one process; a directory belongs to one Cache.
type Cache struct {
	dir  string
	aead cipher.AEAD
	max  int64
	log  *slog.Logger
	now  func() time.Time

	mu    sync.Mutex
	lru   *list.List               // of *indexEntry; front = most recently used
	index map[string]*list.Element // by file ID
	total int64                    // bytes of the indexed entry files
}

type indexEntry struct {
	id   string
	size int64
}

// Open opens (creating it with mode 0700 if needed) the cache in dir.
//
// The first Open generates a random AES-256 key, has sealer seal it, and
// writes the sealed blob to dir/key.sealed (0600); later ones unseal it.
// When the TPM refuses the blob (another TPM's, or this TPM was cleared
// since) or the file is damaged, the key is lost for good: Open logs that,
// removes every entry (none can be opened any more) and starts over with a
// new key. Any other failure to unseal (the TPM not answering) is returned,
// and the entries are left alone for a later Open.
func Open(dir string, sealer Sealer, opts Options) (*Cache, error) {
	if sealer == nil {
		return nil, ErrNoSealer
	}
	if opts.MaxBytes < 0 {
		return nil, fmt.Errorf("plancache: MaxBytes %d is negative", opts.MaxBytes)
	}
	c := &Cache{dir: dir, max: opts.MaxBytes, log: opts.Logger, now: opts.Now, lru: list.New(), index: map[string]*list.Element{}}
	if c.max == 0 {
		c.max = DefaultMaxBytes
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("plancache: %w", err)
	}
	key, err := c.loadKey(sealer)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	clear(key)
	if err != nil {
		return nil, fmt.Errorf("plancache: %w", err)
	}
	if c.aead, err = cipher.NewGCM(block); err != nil {
		return nil, fmt.Errorf("plancache: %w", err)
	}
	if err := c.scan(); err != nil {
		return nil, err
	}
	return c, nil
}

// loadKey returns the cache key, unsealed, or makes a new one.
func (c *Cache) loadKey(sealer Sealer) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join(c.dir, keyFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return c.newKey(sealer, "")
	}
	if err != nil {
		return nil, fmt.Errorf("plancache: read sealed key: %w", err)
	}
	var blob tpmdev.SealedBlob
	if err := blob.UnmarshalBinary(raw); err != nil {
		return c.newKey(sealer, fmt.Sprintf("the sealed key file is damaged (%v)", err))
	}
	key, err := sealer.Unseal(blob)
	if errors.Is(err, tpmdev.ErrSealedBlob) {
		return c.newKey(sealer, "the TPM refuses the sealed key (sealed by another TPM, or this TPM was cleared since)")
	}
	if err != nil {
		return nil, fmt.Errorf("plancache: unseal cache key: %w", err)
	}
	if len(key) != cacheKeyLen {
		clear(key)
		return c.newKey(sealer, fmt.Sprintf("the sealed key has %d bytes, not %d", len(key), cacheKeyLen))
	}
	return key, nil
}

// newKey generates, seals and stores a new cache key. Entries made under an
// earlier key can never be opened again, so it removes them first; why the
// old key is gone is logged when there was one.
func (c *Cache) newKey(sealer Sealer, lost string) ([]byte, error) {
	removed, err := c.removeEntries()
	if err != nil {
		return nil, err
	}
	if lost != "" || removed > 0 {
		if lost == "" {
			lost = "the sealed key file is missing"
		}
		c.log.Warn("plan cache key lost; starting over with a new key", "reason", lost, "entries_removed", removed)
	}
	key := make([]byte, cacheKeyLen)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("plancache: generate key: %w", err)
	}
	blob, err := sealer.Seal(key)
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("plancache: seal cache key: %w", err)
	}
	raw, err := blob.MarshalBinary()
	if err == nil {
		err = writeFileAtomic(c.dir, keyFileName, raw, c.now())
	}
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("plancache: store sealed key: %w", err)
	}
	return key, nil
}

// removeEntries deletes every entry file and leftover temporary file.
func (c *Cache) removeEntries() (int, error) {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return 0, fmt.Errorf("plancache: %w", err)
	}
	removed := 0
	for _, de := range des {
		name := de.Name()
		if !isEntryName(name) && !strings.HasPrefix(name, tempPrefix) {
			continue
		}
		if err := os.Remove(filepath.Join(c.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("plancache: remove stale entry: %w", err)
		}
		if isEntryName(name) {
			removed++
		}
	}
	return removed, nil
}

// isEntryName reports whether name is an entry file's: 64 lowercase hex
// digits and the suffix.
func isEntryName(name string) bool {
	id, ok := strings.CutSuffix(name, entrySuffix)
	if !ok || len(id) != 64 {
		return false
	}
	for _, r := range id {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

// scan indexes the entry files in use order (their modification times, set
// by Put and Get), removes files left over by a write that did not finish,
// and evicts down to MaxBytes (which may have shrunk since the last run).
func (c *Cache) scan() error {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("plancache: %w", err)
	}
	type found struct {
		id    string
		size  int64
		mtime time.Time
	}
	var entries []found
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, tempPrefix) {
			if err := os.Remove(filepath.Join(c.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("plancache: remove unfinished write: %w", err)
			}
			continue
		}
		if !isEntryName(name) || !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("plancache: %w", err)
		}
		entries = append(entries, found{strings.TrimSuffix(name, entrySuffix), fi.Size(), fi.ModTime()})
	}
	slices.SortFunc(entries, func(a, b found) int { return a.mtime.Compare(b.mtime) })
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range entries {
		c.index[e.id] = c.lru.PushFront(&indexEntry{id: e.id, size: e.size})
		c.total += e.size
	}
	c.evictLocked("")
	return nil
}

func (c *Cache) path(id string) string { return filepath.Join(c.dir, id+entrySuffix) }

// Get returns the plan stored under k. It returns an error wrapping
// ErrMiss when there is none; when the entry exists but does not open, the
// entry is removed and the error wraps both ErrCorrupt and ErrMiss. The
// plan is never returned in part or from another key's entry.
func (c *Cache) Get(k Key) ([]byte, error) {
	if err := k.validate(); err != nil {
		return nil, err
	}
	id := k.fileID()
	path := c.path(id)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		c.forget(id)
		return nil, ErrMiss
	}
	if err != nil {
		return nil, fmt.Errorf("plancache: read entry: %w", err)
	}
	fi, data, err := readEntryFile(f)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		c.drop(id, fi)
		return nil, &corruptError{id: id, reason: "not a regular file"}
	}
	plan, err := openEntry(c.aead, k.encode(), data)
	if err != nil {
		c.drop(id, fi)
		return nil, &corruptError{id: id, reason: err.Error()}
	}
	c.touch(id, fi.Size())
	// The modification time orders entries for eviction after a restart;
	// failing to set it only makes this entry look older than it is.
	now := c.now()
	_ = os.Chtimes(path, now, now)
	return plan, nil
}

func readEntryFile(f *os.File) (fs.FileInfo, []byte, error) {
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("plancache: read entry: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fi, nil, nil
	}
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		// Shorter than its size said: it is being replaced right now, or
		// was cut; the authentication below would refuse it anyway.
		return fi, nil, nil
	}
	return fi, data, nil
}

// corruptError is Get's error for an entry that did not open.
type corruptError struct{ id, reason string }

func (e *corruptError) Error() string {
	return fmt.Sprintf("plancache: corrupt entry %s removed, a miss: %s", e.id[:16], e.reason)
}

func (e *corruptError) Is(target error) bool { return target == ErrCorrupt || target == ErrMiss }

// Put stores plan under k, replacing any entry k had, then evicts the least
// recently used entries until the cache fits in MaxBytes. Only ciphertext is
// written: the entry is sealed in memory, written to a temporary file in the
// directory (0600), synced and renamed into place, so a crash leaves either
// the old entry or the new one.
func (c *Cache) Put(k Key, plan []byte) error {
	if err := k.validate(); err != nil {
		return err
	}
	if len(plan) == 0 {
		return errors.New("plancache: empty plan")
	}
	if size := int64(len(plan)) + entryOverhead; size > c.max {
		return fmt.Errorf("%w: an entry of %d bytes, the cache holds %d", ErrTooLarge, size, c.max)
	}
	data, err := sealEntry(c.aead, k.encode(), plan, rand.Reader)
	if err != nil {
		return err
	}
	id := k.fileID()
	if err := writeFileAtomic(c.dir, id+entrySuffix, data, c.now()); err != nil {
		return fmt.Errorf("plancache: write entry: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	size := int64(len(data))
	if fi, err := os.Stat(c.path(id)); err == nil {
		size = fi.Size() // a concurrent Put of the same key may have won the rename
	}
	c.setLocked(id, size)
	c.evictLocked(id)
	return nil
}

// Remove deletes the entry of k, if any: for a plan that opened but that
// TensorRT no longer loads.
func (c *Cache) Remove(k Key) error {
	if err := k.validate(); err != nil {
		return err
	}
	id := k.fileID()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unindexLocked(id)
	if err := os.Remove(c.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("plancache: remove entry: %w", err)
	}
	return nil
}

// Stats describe a Cache.
type Stats struct {
	Entries  int
	Bytes    int64 // total size of the entry files
	MaxBytes int64
}

// Stats returns the number and total size of the entries.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Entries: c.lru.Len(), Bytes: c.total, MaxBytes: c.max}
}

// touch marks id as just used, indexing it if it was not (a file a crash
// kept from the index, say).
func (c *Cache) touch(id string, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(id, size)
	c.evictLocked(id)
}

func (c *Cache) setLocked(id string, size int64) {
	if el, ok := c.index[id]; ok {
		e := el.Value.(*indexEntry)
		c.total += size - e.size
		e.size = size
		c.lru.MoveToFront(el)
		return
	}
	c.index[id] = c.lru.PushFront(&indexEntry{id: id, size: size})
	c.total += size
}

func (c *Cache) unindexLocked(id string) {
	if el, ok := c.index[id]; ok {
		c.total -= el.Value.(*indexEntry).size
		c.lru.Remove(el)
		delete(c.index, id)
	}
}

// forget drops id from the index (its file is gone).
func (c *Cache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unindexLocked(id)
}

// drop removes a corrupt entry: the file Get read, unless a Put has
// replaced it since (then the new file is left alone).
func (c *Cache) drop(id string, read fs.FileInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	path := c.path(id)
	cur, err := os.Lstat(path)
	if err != nil {
		c.unindexLocked(id)
		return
	}
	if !os.SameFile(cur, read) && cur.Mode().IsRegular() {
		return
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("plan cache: cannot remove a corrupt entry", "entry", id, "error", err)
		return
	}
	c.unindexLocked(id)
}

// evictLocked removes least recently used entries, but never keep, until
// the total fits in MaxBytes.
func (c *Cache) evictLocked(keep string) {
	for c.total > c.max {
		el := c.lru.Back()
		if el == nil {
			return
		}
		e := el.Value.(*indexEntry)
		if e.id == keep {
			el = el.Prev()
			if el == nil {
				return
			}
			e = el.Value.(*indexEntry)
		}
		if err := os.Remove(c.path(e.id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// Handled here: the cache stays usable; the file keeps its disk
			// space until the next Open retries.
			c.log.Warn("plan cache: cannot evict an entry", "entry", e.id, "error", err)
		}
		c.unindexLocked(e.id)
	}
}

// writeFileAtomic writes data to dir/name through a temporary file in dir
// (mode 0600, synced, its modification time set to mtime) renamed over
// name, then syncs dir so the rename survives a crash.
func writeFileAtomic(dir, name string, data []byte, mtime time.Time) (err error) {
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
