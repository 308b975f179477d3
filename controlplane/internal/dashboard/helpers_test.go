package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/dashboard"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// clock is a settable clock for session and key expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a dashboard over a real SQLite store, served by httptest.
type env struct {
	st    *store.Store
	d     *dashboard.Dashboard
	srv   *httptest.Server
	clock *clock
}

type envOpt struct {
	tls bool
	cfg func(*dashboard.Config)
	// raw leaves the server unstarted (the caller serves d itself).
	raw bool
}

func newEnv(t *testing.T, o envOpt) *env {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	c := &clock{t: time.Now()}
	cfg := dashboard.Config{Store: st, Now: c.Now, PollInterval: 50 * time.Millisecond, Logger: testLogger(t)}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	e := &env{st: st, d: dashboard.New(cfg), clock: c}
	if o.raw {
		t.Cleanup(e.d.Close)
		return e
	}
	if o.tls {
		e.srv = httptest.NewTLSServer(e.d)
	} else {
		e.srv = httptest.NewServer(e.d)
	}
	t.Cleanup(e.srv.Close)
	t.Cleanup(e.d.Close) // runs first: open streams end, so Close does not wait
	return e
}

// tenant is a seeded tenant: an admin operator with a key, a fleet and
// devices.
type tenant struct {
	ID         string
	Key, KeyID string
	OperatorID string
	Fleet      store.Fleet
}

func seedTenant(t *testing.T, st *store.Store, id string, role store.Role) tenant {
	t.Helper()
	ctx := context.Background()
	if _, err := st.CreateTenant(ctx, store.Tenant{ID: id, WrappedDEK: []byte("dek-" + id)}); err != nil {
		t.Fatal(err)
	}
	op, err := st.CreateOperator(ctx, id, store.Operator{Name: "op-" + id, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	k, secret, err := st.CreateAPIKey(ctx, id, store.APIKey{OperatorID: op.ID, Role: role, Name: "dashboard"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := st.CreateFleet(ctx, id, store.Fleet{Name: id + "-edge"})
	if err != nil {
		t.Fatal(err)
	}
	return tenant{ID: id, Key: secret, KeyID: k.ID, OperatorID: op.ID, Fleet: f}
}

func addDevice(t *testing.T, st *store.Store, tn tenant, name string, online bool) store.Device {
	t.Helper()
	ctx := context.Background()
	d, err := st.CreateDevice(ctx, tn.ID, store.Device{FleetID: tn.Fleet.ID, Name: name, TPMKind: store.TPMNone, DeviceType: "jetson-orin"})
	if err != nil {
		t.Fatal(err)
	}
	if online {
		if err := st.SetDevicePresence(ctx, tn.ID, d.ID, true, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	t       *testing.T
	base    string
	c       *http.Client
	cookies map[string]*http.Cookie
}

func newBrowser(t *testing.T, srv *httptest.Server) *browser {
	c := srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.Timeout = 30 * time.Second
	return &browser{t: t, base: srv.URL, c: c, cookies: map[string]*http.Cookie{}}
}

func (b *browser) do(method, path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	for _, c := range b.cookies {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	b.keep(resp)
	return resp, string(raw)
}

func (b *browser) keep(resp *http.Response) {
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 || c.Value == "" {
			delete(b.cookies, c.Name)
			continue
		}
		b.cookies[c.Name] = c
	}
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func formToken(t *testing.T, page string) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf field in %s", page)
	}
	return m[1]
}

// login signs in with key and returns the page after the redirect.
func (b *browser) login(key string) string {
	b.t.Helper()
	_, page := b.do("GET", "/dashboard/login", nil, nil)
	resp, body := b.do("POST", "/dashboard/login", url.Values{"csrf": {formToken(b.t, page)}, "api_key": {key}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dashboard/" {
		b.t.Fatalf("login: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	resp, page = b.do("GET", "/dashboard/", nil, nil)
	if resp.StatusCode != 200 {
		b.t.Fatalf("page after login: %d %s", resp.StatusCode, page)
	}
	return page
}

// sse is an open event stream.
type sse struct {
	resp   *http.Response
	events chan event
	done   chan struct{} // closed when the stream ends
}

type event struct {
	Name, ID, Data string
	Comment        string
}

func (b *browser) events(t *testing.T) *sse {
	t.Helper()
	req, err := http.NewRequest("GET", b.base+"/dashboard/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range b.cookies {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	c := *b.c
	c.Timeout = 0
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("events: %d %s", resp.StatusCode, raw)
	}
	s := &sse{resp: resp, events: make(chan event, 256), done: make(chan struct{})}
	t.Cleanup(func() { resp.Body.Close() })
	go s.read()
	return s
}

// read parses the stream as the EventSource spec says, with comments kept
// as events of their own.
func (s *sse) read() {
	defer close(s.done)
	sc := bufio.NewScanner(s.resp.Body)
	sc.Buffer(make([]byte, 1<<20), 8<<20)
	var ev event
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Name != "" || len(data) > 0 {
				ev.Data = strings.Join(data, "\n")
				s.events <- ev
			}
			ev, data = event{}, nil
		case strings.HasPrefix(line, ":"):
			s.events <- event{Comment: strings.TrimSpace(line[1:])}
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				ev.Name = value
			case "id":
				ev.ID = value
			case "data":
				data = append(data, value)
			case "retry":
				s.events <- event{Name: "retry", Data: value}
			}
		}
	}
}

type patch struct {
	ID   string `json:"id"`
	HTML string `json:"html"`
}

// next returns the next event that is not a comment or the retry field.
func (s *sse) next(t *testing.T, timeout time.Duration) event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-s.events:
			if ev.Comment != "" || ev.Name == "retry" {
				continue
			}
			return ev
		case <-s.done:
			t.Fatal("event stream ended")
		case <-deadline:
			t.Fatalf("no event within %s", timeout)
		}
	}
}

func patches(t *testing.T, ev event) []patch {
	t.Helper()
	if ev.Name != "patch" {
		t.Fatalf("event %q, want patch: %s", ev.Name, ev.Data)
	}
	var m struct {
		Patches []patch `json:"patches"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &m); err != nil {
		t.Fatalf("patch data %q: %v", ev.Data, err)
	}
	return m.Patches
}

// waitPatch reads patches until one for id satisfies ok.
func (s *sse) waitPatch(t *testing.T, id string, ok func(html string) bool) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ev := s.next(t, time.Until(deadline))
		if ev.Name != "patch" {
			continue
		}
		for _, p := range patches(t, ev) {
			if p.ID == id && ok(p.HTML) {
				return p.HTML
			}
		}
	}
	t.Fatalf("no patch of %s as wanted", id)
	return ""
}

func ids(ps []patch) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

// testWriter sends log lines to t.Log until the test's cleanup.
type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, nil))
}

func mustContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q", what, sub)
		}
	}
}

func mustNotContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			t.Errorf("%s contains %q", what, sub)
		}
	}
}
