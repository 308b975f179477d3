package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

var errStalled = errors.New("download stalled")

// packagePath is where a complete, hash-checked package is kept.
func (in *Installer) packagePath(id string) string {
	return filepath.Join(in.cfg.PackageDir, id+".tgsp")
}

func (in *Installer) partialPath(id string) string {
	return filepath.Join(in.cfg.PackageDir, id+".partial")
}

// download makes sure the job's package is complete on disk, stored as
// shipped (encrypted), and that its SHA-256 is the registry id. It resumes
// a partial file with a Range request from its current size, retries
// failures with backoff (a request that made progress resets the count),
// and gives up with a DOWNLOAD refusal after cfg.DownloadAttempts
// consecutive failures.
func (in *Installer) download(ctx context.Context, rec *jobRecord) (string, error) {
	ref := rec.Job.Package
	final := in.packagePath(ref.ID)
	if _, err := os.Stat(final); err == nil {
		// Complete already: a crash after the rename, or a package that
		// a slot holds (a re-install after a rollback).
		ok, err := fileHasSHA256(final, ref.ID)
		if err != nil {
			return "", localError(err)
		}
		if ok {
			return final, nil
		}
		in.log.Warn("stored package does not match its id; downloading it again", "package", ref.ID)
		if err := os.Remove(final); err != nil {
			return "", localError(err)
		}
	}
	if err := os.MkdirAll(in.cfg.PackageDir, 0o700); err != nil {
		return "", localError(err)
	}
	partial := in.partialPath(ref.ID)
	in.lastProgress = time.Time{} // the first bytes of every download are reported
	u, err := in.cfg.Client.packageURL(ref)
	if err != nil {
		return "", refuse(wire.JobReasonMalformed, "%v", err)
	}
	failures, mismatches := 0, 0
	var lastErr error
	for {
		if failures >= in.cfg.DownloadAttempts {
			return "", refuse(wire.JobReasonDownload, "after %d attempts: %v", failures, lastErr)
		}
		if failures > 0 {
			if err := sleep(ctx, in.cfg.Backoff.Delay(failures)); err != nil {
				return "", err
			}
		}
		size, err := fileSize(partial)
		if err != nil {
			return "", localError(err)
		}
		if size > ref.Size {
			if err := os.Truncate(partial, 0); err != nil {
				return "", localError(err)
			}
			size = 0
		}
		if size == ref.Size {
			ok, err := fileHasSHA256(partial, ref.ID)
			if err != nil {
				return "", localError(err)
			}
			if !ok {
				// Damaged on the way or on disk: once more from the start.
				mismatches++
				if mismatches > 1 {
					return "", refuse(wire.JobReasonDownload, "the downloaded package does not have the SHA-256 %s", ref.ID)
				}
				in.log.Warn("downloaded package does not match its id; starting over", "package", ref.ID)
				if err := os.Remove(partial); err != nil {
					return "", localError(err)
				}
				continue
			}
			if err := commitFile(partial, final); err != nil {
				return "", localError(err)
			}
			return final, nil
		}
		n, err := in.fetchRange(ctx, rec, u, partial, size)
		if err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			var je *jobError
			if errors.As(err, &je) || errors.Is(err, errCrash) || errors.Is(err, errStorage) {
				return "", err
			}
			if n > 0 {
				failures = 0
			}
			failures++
			lastErr = err
			in.log.Warn("package download interrupted", "package", ref.ID, "offset", size+n, "attempt", failures, "err", err)
			continue
		}
		failures = 0
	}
}

// fetchRange appends the package from offset to the partial file and
// returns how many bytes it appended.
func (in *Installer) fetchRange(ctx context.Context, rec *jobRecord, u, partial string, offset int64) (int64, error) {
	ref := rec.Job.Package
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(in.cfg.Client.StallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()

	resp, err := in.cfg.Client.get(ctx, u, offset)
	if err != nil {
		if c := context.Cause(ctx); c != nil && errors.Is(c, errStalled) {
			return 0, c
		}
		var api *APIError
		if errors.As(err, &api) && !temporary(err) {
			return 0, refuse(wire.JobReasonDownload, "%v", err)
		}
		return 0, err
	}
	defer resp.Body.Close()
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	switch resp.StatusCode {
	case http.StatusRequestedRangeNotSatisfiable:
		// Our offset is not inside the blob the server has: start over.
		return 0, errors.Join(errors.New("server refused the range; restarting the download"), os.Truncate(partial, 0))
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != ref.Size {
			return 0, fmt.Errorf("server sent %d bytes for a package of %d", resp.ContentLength, ref.Size)
		}
		flags |= os.O_TRUNC // no range support here: the whole blob comes
		offset = 0
	case http.StatusPartialContent:
		start, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != offset || total != ref.Size {
			return 0, fmt.Errorf("server answered range %q to a request from %d of %d", resp.Header.Get("Content-Range"), offset, ref.Size)
		}
	}
	f, err := os.OpenFile(partial, flags, 0o600)
	if err != nil {
		return 0, localError(err)
	}
	defer f.Close()

	buf := make([]byte, 64<<10)
	body := io.LimitReader(resp.Body, ref.Size-offset)
	var n int64
	var hooked bool
	for {
		k, rerr := body.Read(buf)
		if k > 0 {
			stall.Reset(in.cfg.Client.StallTimeout)
			if _, err := f.Write(buf[:k]); err != nil {
				return n, localError(err)
			}
			n += int64(k)
			if err := in.progress(rec, offset+n, false); err != nil {
				return n, err
			}
			if !hooked {
				hooked = true
				if err := in.checkpoint("download:partial"); err != nil {
					return n, err
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if c := context.Cause(ctx); c != nil && errors.Is(c, errStalled) {
				return n, c
			}
			return n, rerr
		}
	}
	if offset+n < ref.Size {
		return n, fmt.Errorf("connection ended at %d of %d bytes: %w", offset+n, ref.Size, io.ErrUnexpectedEOF)
	}
	if err := f.Sync(); err != nil {
		return n, localError(err)
	}
	return n, in.progress(rec, offset+n, true)
}

// localError ends the job on a failure of the device's own disk (full,
// read-only): retrying the download cannot help, and the agent stays up.
func localError(err error) error {
	return refuse(wire.JobReasonInternal, "package file: %v", err)
}

// parseContentRange parses "bytes start-end/total".
func parseContentRange(h string) (start, total int64, err error) {
	rest, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, 0, fmt.Errorf("bad Content-Range %q", h)
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, fmt.Errorf("bad Content-Range %q", h)
	}
	s, _, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, fmt.Errorf("bad Content-Range %q", h)
	}
	if start, err = strconv.ParseInt(s, 10, 64); err != nil {
		return 0, 0, err
	}
	if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
		return 0, 0, err
	}
	return start, total, nil
}

func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// fileHasSHA256 reports whether the file's SHA-256 is the hex id.
func fileHasSHA256(path, id string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)) == id, nil
}

// commitFile renames a complete, synced file into place durably.
func commitFile(from, to string) error {
	f, err := os.Open(from)
	if err != nil {
		return err
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return err
	}
	if err := os.Rename(from, to); err != nil {
		return err
	}
	return syncDir(filepath.Dir(to))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
