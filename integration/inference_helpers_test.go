package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// writeWatch records, through fanotify, every write to a file under some
// directories while it runs, and reads the file through the descriptor the
// kernel hands over with each event, looking for plaintext. The kernel
// opens that descriptor when the write or close happens, so a file removed
// at once is still read: the watch proves what a scan afterwards cannot.
// fanotify needs CAP_SYS_ADMIN (CI runs as root).
type writeWatch struct {
	t       *testing.T
	fd      int
	dirs    []string
	needles [][]byte
	mu      sync.Mutex
	seen    map[string]bool
	hits    []string
	done    chan struct{}
}

func watchWrites(t *testing.T, needles [][]byte, dirs ...string) *writeWatch {
	t.Helper()
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_LARGEFILE)
	if err != nil {
		t.Fatalf("fanotify (needs root): %v", err)
	}
	w := &writeWatch{t: t, fd: fd, needles: needles, seen: map[string]bool{}, done: make(chan struct{})}
	for _, d := range dirs {
		real, err := filepath.EvalSymlinks(d)
		if err != nil {
			t.Fatal(err)
		}
		w.dirs = append(w.dirs, real+string(filepath.Separator))
		// The mark covers the whole mount; events are filtered by path.
		if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_MOUNT, unix.FAN_MODIFY|unix.FAN_CLOSE_WRITE, unix.AT_FDCWD, real); err != nil {
			unix.Close(fd)
			t.Fatalf("fanotify mark %s: %v", real, err)
		}
	}
	go w.loop()
	return w
}

func (w *writeWatch) loop() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(w.fd, buf)
		if err == unix.EAGAIN {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		if err != nil || n <= 0 {
			return // closed
		}
		for off := 0; off+int(unsafe.Sizeof(unix.FanotifyEventMetadata{})) <= n; {
			ev := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
			off += int(ev.Event_len)
			if ev.Fd < 0 {
				continue
			}
			w.check(int(ev.Fd))
			unix.Close(int(ev.Fd))
		}
	}
}

func (w *writeWatch) check(fd int) {
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return
	}
	p = strings.TrimSuffix(p, " (deleted)")
	inside := false
	for _, d := range w.dirs {
		inside = inside || strings.HasPrefix(p, d)
	}
	if !inside {
		return
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return
	}
	b := make([]byte, st.Size)
	if _, err := unix.Pread(fd, b, 0); err != nil && st.Size > 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen[p] = true
	for i, n := range w.needles {
		if bytes.Contains(b, n) {
			w.hits = append(w.hits, fmt.Sprintf("plaintext %d in %s", i, p))
		}
	}
}

// stop ends the watch and returns the files written and any plaintext
// found.
func (w *writeWatch) stop() (written []string, hits []string) {
	unix.Close(w.fd)
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for p := range w.seen {
		written = append(written, p)
	}
	return written, w.hits
}

// unixHTTP returns a client whose every request goes to the Unix socket.
func unixHTTP(sock string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
}

// v2Infer posts a KServe v2 inference request and decodes the answer.
func v2Infer(c *http.Client, model string, body any) (int, map[string]any, error) {
	b, _ := json.Marshal(body)
	resp, err := c.Post("http://agent/v2/models/"+model+"/infer", "application/json", bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("answer %q: %w", raw, err)
	}
	return resp.StatusCode, out, nil
}
