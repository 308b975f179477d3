package registry

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// slowServer serves h with whole-request read and write timeouts far
// shorter than the transfers the test makes, as the control plane's 60 s
// timeouts are shorter than a large package's transfer.
func slowServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ReadTimeout = 300 * time.Millisecond
	srv.Config.WriteTimeout = 300 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// trickle yields data in pieces with a pause before each.
type trickle struct {
	data  []byte
	piece int
	pause time.Duration
}

func (r *trickle) Read(b []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.pause)
	n := copy(b[:min(len(b), r.piece)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestUploadOutlivesReadTimeout: a body that takes longer to arrive than
// the server's read timeout is received whole through UploadBody, and the
// answer after it is written.
func TestUploadOutlivesReadTimeout(t *testing.T) {
	t.Parallel()
	data := make([]byte, 64<<10)
	_, _ = rand.Read(data)
	srv := slowServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, err := io.ReadAll(UploadBody(w, r))
		time.Sleep(400 * time.Millisecond) // verifying takes a while too
		PrepareResponse(w)
		if err != nil || !bytes.Equal(got, data) {
			http.Error(w, "body differs", http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	req, err := http.NewRequest("POST", srv.URL, &trickle{data: data, piece: 8 << 10, pause: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("upload over %s: %v", 8*150*time.Millisecond, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
}

// TestServeBlobOutlivesWriteTimeout: a download read more slowly than the
// server's write timeout allows arrives whole, and a range of it too.
func TestServeBlobOutlivesWriteTimeout(t *testing.T) {
	t.Parallel()
	// More than the loopback socket buffers hold, so the server's writes
	// block while the client dawdles.
	data := make([]byte, 24<<20)
	_, _ = rand.Read(data)
	id := sha(data)
	l, err := NewLocalBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(l.StagingDir(), "x")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.Put(t.Context(), "acme", id, src); err != nil {
		t.Fatal(err)
	}
	pkg := store.Package{ID: id, Name: "m", Version: "1.0.0", Size: int64(len(data))}
	srv := slowServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := l.Open(r.Context(), "acme", id)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer b.Close()
		ServeBlob(w, r, pkg, b)
	}))
	for _, rng := range []string{"", "bytes=1000-"} {
		req, _ := http.NewRequest("GET", srv.URL, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		buf := make([]byte, 1<<20)
		for {
			n, err := resp.Body.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond) // about a second in all
		}
		resp.Body.Close()
		want, status := data, 200
		if rng != "" {
			want, status = data[1000:], 206
		}
		if resp.StatusCode != status || !bytes.Equal(got, want) || resp.Header.Get("ETag") != `"`+id+`"` {
			t.Fatalf("Range %q: %d, %d of %d bytes (%s)", rng, resp.StatusCode, len(got), len(want), strconv.Quote(resp.Header.Get("ETag")))
		}
	}
}
