package dashboard_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/dashboard"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

func TestLoginSetsSessionCookie(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"plain loopback", false}, {"tls", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOpt{tls: tc.tls})
			tn := seedTenant(t, e.st, "acme", store.RoleAdmin)
			addDevice(t, e.st, tn, "cam-1", true)
			b := newBrowser(t, e.srv)

			resp, _ := b.do("GET", "/dashboard/", nil, nil)
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dashboard/login" {
				t.Fatalf("page without a session: %d %q, want a redirect to the login", resp.StatusCode, resp.Header.Get("Location"))
			}
			resp, _ = b.do("GET", "/dashboard/events", nil, nil)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("events without a session: %d, want 401", resp.StatusCode)
			}

			resp, page := b.do("GET", "/dashboard/login", nil, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("login form: %d", resp.StatusCode)
			}
			token := formToken(t, page)
			resp, body := b.do("POST", "/dashboard/login", url.Values{"csrf": {token}, "api_key": {tn.Key + "x"}}, nil)
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Invalid API key") {
				t.Fatalf("wrong key: %d %s", resp.StatusCode, body)
			}
			if _, ok := b.cookies["tg_dashboard"]; ok {
				t.Fatal("a wrong key got a session cookie")
			}

			page = b.login(tn.Key)
			mustContain(t, "page", page, "acme-edge", "cam-1", "op-acme")
			c := b.cookies["tg_dashboard"]
			if c == nil {
				t.Fatal("no session cookie")
			}
			var raw string
			for _, h := range resp.Header.Values("Set-Cookie") {
				raw += h
			}
			switch {
			case !c.HttpOnly, c.SameSite != http.SameSiteStrictMode, c.Path != "/dashboard", c.MaxAge <= 0, c.MaxAge > int(dashboard.DefaultSessionTTL/time.Second):
				t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/dashboard, Max-Age within the TTL", c)
			case c.Secure != tc.tls:
				t.Errorf("session cookie Secure = %v over tls=%v", c.Secure, tc.tls)
			case len(c.Value) < 43 || strings.Contains(c.Value, tn.Key) || strings.Contains(tn.Key, c.Value):
				t.Errorf("session id %q: want 256 random bits, unrelated to the key", c.Value)
			}
			if strings.Contains(page, tn.Key) {
				t.Error("the page shows the API key")
			}

			// Logout ends the session on the server: the old cookie is dead.
			old := *c
			resp, _ = b.do("POST", "/dashboard/logout", url.Values{"csrf": {formToken(t, page)}}, nil)
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dashboard/login" {
				t.Fatalf("logout: %d %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			if _, ok := b.cookies["tg_dashboard"]; ok {
				t.Error("logout left the session cookie")
			}
			b.cookies["tg_dashboard"] = &old
			if resp, _ = b.do("GET", "/dashboard/", nil, nil); resp.StatusCode != http.StatusSeeOther {
				t.Errorf("page with a logged-out session id: %d, want a redirect", resp.StatusCode)
			}
		})
	}
}

func TestLoginAndLogoutRefuseForgedRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpt{})
	tn := seedTenant(t, e.st, "acme", store.RoleViewer)
	b := newBrowser(t, e.srv)
	_, page := b.do("GET", "/dashboard/login", nil, nil)
	token := formToken(t, page)

	for _, tc := range []struct {
		name string
		form url.Values
		hdr  map[string]string
	}{
		{"no form token", url.Values{"api_key": {tn.Key}}, nil},
		{"another form token", url.Values{"api_key": {tn.Key}, "csrf": {strings.Repeat("A", len(token))}}, nil},
		{"cross-site fetch", url.Values{"api_key": {tn.Key}, "csrf": {token}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"foreign origin", url.Values{"api_key": {tn.Key}, "csrf": {token}}, map[string]string{"Origin": "https://evil.example"}},
	} {
		// The login cookie survives refusals that happen before the form
		// is read; restore it for each case.
		cookie := *b.cookies["tg_dashboard_login"]
		b.cookies["tg_dashboard_login"] = &cookie
		resp, _ := b.do("POST", "/dashboard/login", tc.form, tc.hdr)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("login with %s: %d, want 403", tc.name, resp.StatusCode)
		}
		if _, ok := b.cookies["tg_dashboard"]; ok {
			t.Fatalf("login with %s got a session", tc.name)
		}
	}

	page = b.login(tn.Key)
	logoutToken := formToken(t, page)
	for _, tc := range []struct {
		name string
		form url.Values
		hdr  map[string]string
	}{
		{"no form token", url.Values{}, nil},
		{"cross-site fetch", url.Values{"csrf": {logoutToken}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"foreign origin", url.Values{"csrf": {logoutToken}}, map[string]string{"Origin": "https://evil.example"}},
	} {
		if resp, _ := b.do("POST", "/dashboard/logout", tc.form, tc.hdr); resp.StatusCode != http.StatusForbidden {
			t.Errorf("logout with %s: %d, want 403", tc.name, resp.StatusCode)
		}
		if resp, _ := b.do("GET", "/dashboard/", nil, nil); resp.StatusCode != 200 {
			t.Fatalf("after a forged logout (%s) the session is gone: %d", tc.name, resp.StatusCode)
		}
	}
}

func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpt{})
	tn := seedTenant(t, e.st, "acme", store.RoleViewer)
	b := newBrowser(t, e.srv)
	b.login(tn.Key)
	for _, path := range []string{"/dashboard/login", "/dashboard/", "/dashboard/static/dashboard.js", "/dashboard/nope"} {
		resp, _ := b.do("GET", path, nil, nil)
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: CSP allows inline code: %q", path, csp)
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: X-Frame-Options %q, X-Content-Type-Options %q", path, h.Get("X-Frame-Options"), h.Get("X-Content-Type-Options"))
		}
	}
	_, page := b.do("GET", "/dashboard/", nil, nil)
	// No inline script or style for the CSP to refuse.
	mustNotContain(t, "page", page, "<script>", "style=", "onclick", "<style")
	if resp, _ := b.do("GET", "/dashboard/static/..%2fdashboard.go", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("static path escape: %d", resp.StatusCode)
	}
}

func TestRevokedOrExpiredKeyEndsSession(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		end  func(e *env, tn tenant)
	}{
		{"key revoked", func(e *env, tn tenant) {
			if err := e.st.RevokeAPIKey(ctx, tn.ID, tn.KeyID); err != nil {
				t.Error(err)
			}
		}},
		{"operator disabled", func(e *env, tn tenant) {
			yes := true
			if _, err := e.st.UpdateOperator(ctx, tn.ID, tn.OperatorID, store.OperatorUpdate{Disabled: &yes}); err != nil {
				t.Error(err)
			}
		}},
		{"operator deleted", func(e *env, tn tenant) {
			if err := e.st.DeleteOperator(ctx, tn.ID, tn.OperatorID); err != nil {
				t.Error(err)
			}
		}},
		{"session lifetime over", func(e *env, _ tenant) { e.clock.Advance(time.Hour + time.Second) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOpt{cfg: func(c *dashboard.Config) { c.SessionTTL = time.Hour }})
			tn := seedTenant(t, e.st, "acme", store.RoleOperator)
			b := newBrowser(t, e.srv)
			b.login(tn.Key)
			stream := b.events(t)
			patches(t, stream.next(t, 10*time.Second))

			tc.end(e, tn)
			if ev := stream.next(t, 10*time.Second); ev.Name != "logout" {
				t.Fatalf("open stream after the session ended: event %q, want logout", ev.Name)
			}
			select {
			case <-stream.done:
			case <-time.After(5 * time.Second):
				t.Fatal("stream still open after logout")
			}
			if resp, _ := b.do("GET", "/dashboard/", nil, nil); resp.StatusCode != http.StatusSeeOther {
				t.Errorf("page after the session ended: %d, want a redirect to the login", resp.StatusCode)
			}
		})
	}
}

func TestKeyExpiryBoundsSession(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpt{})
	tn := seedTenant(t, e.st, "acme", store.RoleViewer)
	_, secret, err := e.st.CreateAPIKey(ctx, tn.ID, store.APIKey{OperatorID: tn.OperatorID, Role: store.RoleViewer, Name: "short",
		ExpiresAt: time.Now().Add(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, e.srv)
	b.login(secret)
	if c := b.cookies["tg_dashboard"]; c.MaxAge > 600 {
		t.Errorf("cookie Max-Age %d outlives the key's 10 minutes", c.MaxAge)
	}
	e.clock.Advance(11 * time.Minute)
	if resp, _ := b.do("GET", "/dashboard/", nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("page after the key expired: %d", resp.StatusCode)
	}
}

func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpt{})
	acme := seedTenant(t, e.st, "acme", store.RoleViewer)
	globex := seedTenant(t, e.st, "globex", store.RoleAdmin)
	addDevice(t, e.st, acme, "acme-cam-1", true)
	gd := addDevice(t, e.st, globex, "globex-cam-1", true)

	b := newBrowser(t, e.srv)
	page := b.login(acme.Key)
	mustContain(t, "acme's page", page, "acme-edge", "acme-cam-1")
	mustNotContain(t, "acme's page", page, "globex", gd.ID, globex.Fleet.ID)

	stream := b.events(t)
	first := stream.next(t, 10*time.Second)
	mustContain(t, "acme's stream", first.Data, "acme-cam-1")
	mustNotContain(t, "acme's stream", first.Data, "globex", gd.ID)

	// A change in globex reaches globex's stream only.
	other := newBrowser(t, e.srv)
	other.login(globex.Key)
	gstream := other.events(t)
	patches(t, gstream.next(t, 10*time.Second))
	if err := e.st.SetDevicePresence(context.Background(), globex.ID, gd.ID, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	gstream.waitPatch(t, "device-"+gd.ID, func(h string) bool { return strings.Contains(h, "offline") })
	deadline := time.After(500 * time.Millisecond)
	for {
		select {
		case ev := <-stream.events:
			if ev.Comment == "" {
				t.Fatalf("acme's stream got %s %s after a change in globex", ev.Name, ev.Data)
			}
		case <-deadline:
			return
		}
	}
}

func TestNamesAreEscaped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpt{})
	tn := seedTenant(t, e.st, "acme", store.RoleViewer)
	evilFleet, err := e.st.CreateFleet(ctx, tn.ID, store.Fleet{Name: `"><svg onload=alert(1)>`})
	if err != nil {
		t.Fatal(err)
	}
	tn.Fleet = evilFleet
	evil := `<script>alert("pwned")</script><img src=x onerror=alert(2)>`
	d := addDevice(t, e.st, tn, evil, true)

	b := newBrowser(t, e.srv)
	page := b.login(tn.Key)
	raw := []string{"<script>alert", "<img src=x", "<svg onload", `"><svg`}
	mustNotContain(t, "page", page, raw...)
	mustContain(t, "page", page, "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;", "&#34;&gt;&lt;svg onload=alert(1)&gt;")

	stream := b.events(t)
	first := patches(t, stream.next(t, 10*time.Second))
	for _, p := range first {
		mustNotContain(t, "patch "+p.ID, p.HTML, raw...)
	}
	// A rename arrives escaped too.
	renamed := `</td></tr><script>alert(3)</script>`
	if _, err := e.st.UpdateDevice(ctx, tn.ID, d.ID, store.DeviceUpdate{Name: &renamed}); err != nil {
		t.Fatal(err)
	}
	h := stream.waitPatch(t, "device-"+d.ID, func(h string) bool { return strings.Contains(h, "alert(3)") })
	mustNotContain(t, "renamed row", h, "<script>", "</td></tr><script")
	mustContain(t, "renamed row", h, "&lt;/td&gt;&lt;/tr&gt;&lt;script&gt;alert(3)&lt;/script&gt;")
}

func TestEventStreamFraming(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpt{cfg: func(c *dashboard.Config) {
		c.PollInterval = time.Hour // nothing but the first message and heartbeats
		c.Heartbeat = 100 * time.Millisecond
	}})
	tn := seedTenant(t, e.st, "acme", store.RoleViewer)
	addDevice(t, e.st, tn, "cam-1", true)
	b := newBrowser(t, e.srv)
	b.login(tn.Key)
	s := b.events(t)
	if ct := s.resp.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := s.resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	select {
	case ev := <-s.events:
		if ev.Name != "retry" || ev.Data != "3000" {
			t.Fatalf("first field %+v, want retry: 3000", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing on the stream")
	}
	ev := s.next(t, 5*time.Second)
	if ev.ID != "1" || strings.Contains(ev.Data, "\n") {
		t.Errorf("first event id %q, data on one line: %q", ev.ID, ev.Data)
	}
	got := ids(patches(t, ev))
	if strings.Join(got, ",") != "summary,fleets,devices,rollouts" {
		t.Errorf("first message replaces %v, want every section", got)
	}
	beats := 0
	deadline := time.After(5 * time.Second)
	for beats < 3 {
		select {
		case ev := <-s.events:
			if ev.Comment != "keepalive" {
				t.Fatalf("unexpected %+v between heartbeats", ev)
			}
			beats++
		case <-deadline:
			t.Fatalf("%d heartbeats in 5s, want 3 at 100ms", beats)
		}
	}
}

func TestEventStreamSendsChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpt{})
	tn := seedTenant(t, e.st, "acme", store.RoleViewer)
	d1 := addDevice(t, e.st, tn, "cam-1", true)
	d2 := addDevice(t, e.st, tn, "cam-2", true)
	r, jobs := seedRollout(t, e.st, tn, d1, d2)

	b := newBrowser(t, e.srv)
	page := b.login(tn.Key)
	mustContain(t, "page", page, "demo-model@1.0.0", "0 ok · 0 failed · 2 in flight")
	s := b.events(t)
	patches(t, s.next(t, 10*time.Second))

	// Offline: the device's row and the summary, nothing else.
	if err := e.st.SetDevicePresence(ctx, tn.ID, d1.ID, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	ps := patches(t, s.next(t, 10*time.Second))
	if got := strings.Join(ids(ps), ","); got != "summary,fleet-"+tn.Fleet.ID+",device-"+d1.ID {
		t.Errorf("offline patched %s", got)
	}
	for _, p := range ps {
		if p.ID == "device-"+d1.ID {
			mustContain(t, "offline row", p.HTML, "s-offline", "cam-1")
		}
	}

	// A verdict.
	if err := e.st.PutAttestationState(ctx, tn.ID, store.AttestationState{DeviceID: d2.ID, State: store.VerdictUntrusted,
		VerdictAt: time.Now(), Reasons: []byte(`[{"code":"PCR_MISMATCH"}]`)}); err != nil {
		t.Fatal(err)
	}
	h := s.waitPatch(t, "device-"+d2.ID, func(h string) bool { return strings.Contains(h, "v-untrusted") })
	mustContain(t, "verdict row", h, "PCR_MISMATCH")

	// Wave progress.
	j := jobs[0]
	j.State, j.ReportState = store.JobSucceeded, "committed"
	if _, err := e.st.SaveJob(ctx, j, store.JobNotified, 1); err != nil {
		t.Fatal(err)
	}
	s.waitPatch(t, "rollout-"+r.ID, func(h string) bool { return strings.Contains(h, "1 ok · 0 failed · 1 in flight") })

	// A new device: the table comes whole.
	addDevice(t, e.st, tn, "cam-3", false)
	s.waitPatch(t, "devices", func(h string) bool {
		return strings.HasPrefix(h, `<tbody id="devices">`) && strings.Contains(h, "cam-3") && strings.Contains(h, "cam-1")
	})
}

// seedRollout creates a running two-device, one-wave rollout with both
// jobs released.
func seedRollout(t *testing.T, st *store.Store, tn tenant, devs ...store.Device) (store.Rollout, []store.RolloutDevice) {
	t.Helper()
	ctx := context.Background()
	sum := sha256.Sum256([]byte("package"))
	pkg, err := st.CreatePackage(ctx, tn.ID, store.Package{ID: hex.EncodeToString(sum[:]), Name: "demo-model", Version: "1.0.0",
		SignedID: "signed", Size: 1234, PublisherKeyID: strings.Repeat("ab", 16), Manifest: []byte(`{}`), ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.CreateRollout(ctx, tn.ID, store.Rollout{PackageID: pkg.ID, PackageName: pkg.Name, PackageVersion: pkg.Version,
		PackageSize: pkg.Size, FleetID: tn.Fleet.ID, Waves: []int{100}, SuccessThreshold: 100, FailureThreshold: 50,
		DeviceTimeout: time.Minute, CreatedBy: "op-" + tn.ID})
	if err != nil {
		t.Fatal(err)
	}
	var jobs []store.RolloutDevice
	for _, d := range devs {
		jobs = append(jobs, store.RolloutDevice{DeviceID: d.ID, Kind: store.JobKindInstall, Wave: 0, Attempt: 1, State: store.JobNotified,
			PackageID: pkg.ID, PackageName: pkg.Name, PackageVersion: pkg.Version, PackageSize: pkg.Size, NotifiedAt: time.Now()})
	}
	jobs, err = st.AddRolloutJobs(ctx, tn.ID, r.ID, jobs)
	if err != nil {
		t.Fatal(err)
	}
	return r, jobs
}

func TestEventStreamLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpt{cfg: func(c *dashboard.Config) {
		c.MaxStreams = 2
		c.MaxStreamsPerSession = 1
	}})
	tn := seedTenant(t, e.st, "acme", store.RoleViewer)
	var bs []*browser
	for range 3 {
		b := newBrowser(t, e.srv)
		b.login(tn.Key)
		bs = append(bs, b)
	}
	bs[0].events(t)
	if resp, _ := bs[0].do("GET", "/dashboard/events", nil, nil); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second stream of one session: %d, want 503 with Retry-After", resp.StatusCode)
	}
	bs[1].events(t)
	if resp, _ := bs[2].do("GET", "/dashboard/events", nil, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("third stream of the server: %d, want 503", resp.StatusCode)
	}
}

// A stream outlives the listener's read and write timeouts (the control
// plane's are 60 s) but ends with Run's context, and the server's graceful
// shutdown then completes at once.
func TestStreamOutlivesTimeoutsAndEndsOnShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpt{raw: true, cfg: func(c *dashboard.Config) { c.Heartbeat = 50 * time.Millisecond }})
	tn := seedTenant(t, e.st, "acme", store.RoleViewer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e.d, ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- e.d.Run(ctx) }()

	b := &browser{t: t, base: "http://" + ln.Addr().String(), c: &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, cookies: map[string]*http.Cookie{}}
	b.login(tn.Key)
	s := b.events(t)
	patches(t, s.next(t, 10*time.Second))
	time.Sleep(time.Second) // > 3× the timeouts
	select {
	case <-s.done:
		t.Fatal("the stream ended at the listener's timeouts")
	default:
	}
	// Still delivering.
	drain := time.After(200 * time.Millisecond)
	beats := 0
	for done := false; !done; {
		select {
		case ev := <-s.events:
			if ev.Comment == "keepalive" {
				beats++
			}
		case <-drain:
			done = true
		}
	}
	if beats == 0 {
		t.Fatal("no heartbeat after the listener's timeouts passed")
	}

	cancel()
	start := time.Now()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatalf("graceful shutdown with an open stream: %v after %s", err, time.Since(start))
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("graceful shutdown took %s with an open stream", took)
	}
	select {
	case <-s.done:
	case <-time.After(2 * time.Second):
		t.Error("stream still open after shutdown")
	}
	if err := <-ran; err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
}
