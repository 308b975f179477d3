package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// Cookie names. Both are HttpOnly, SameSite=Strict, Path=/dashboard.
const (
	sessionCookie = "tg_dashboard"
	loginCookie   = "tg_dashboard_login" // the login form's double-submitted token
	cookiePath    = "/dashboard"
	loginPath     = "/dashboard/login"
	pagePath      = "/dashboard/"
	maxFormBytes  = 8 << 10
	loginTokenTTL = time.Hour
)

// session is what the server keeps for a signed-in browser. It holds no
// secret of the API key: only which key it was.
type session struct {
	tenant     string
	keyID      string
	operatorID string
	operator   string // name, for the page
	role       store.Role
	created    time.Time
	expires    time.Time
	// csrf is the token the logout form must carry.
	csrf string

	streams int // open event streams; guarded by sessions.mu
}

// sessions holds sessions by the SHA-256 of their id, so that the map's
// keys are no credential and lookups compare no secret.
type sessions struct {
	mu  sync.Mutex
	max int
	m   map[[32]byte]*session
}

func newSessions(max int) *sessions {
	return &sessions{max: max, m: map[[32]byte]*session{}}
}

var errTooManySessions = errors.New("too many dashboard sessions")

func sessionKey(id string) [32]byte { return sha256.Sum256([]byte(id)) }

// add stores s under a fresh random id and returns the id.
func (ss *sessions) add(s *session, now time.Time) (string, error) {
	id := randomToken()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.m) >= ss.max {
		ss.pruneLocked(now)
		if len(ss.m) >= ss.max {
			return "", errTooManySessions
		}
	}
	ss.m[sessionKey(id)] = s
	return id, nil
}

// get returns the live session of id; an expired one is removed.
func (ss *sessions) get(id string, now time.Time) (*session, bool) {
	if id == "" {
		return nil, false
	}
	k := sessionKey(id)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[k]
	if !ok {
		return nil, false
	}
	if !now.Before(s.expires) {
		delete(ss.m, k)
		return nil, false
	}
	return s, true
}

func (ss *sessions) remove(id string) {
	ss.mu.Lock()
	delete(ss.m, sessionKey(id))
	ss.mu.Unlock()
}

func (ss *sessions) prune(now time.Time) {
	ss.mu.Lock()
	ss.pruneLocked(now)
	ss.mu.Unlock()
}

func (ss *sessions) pruneLocked(now time.Time) {
	for k, s := range ss.m {
		if !now.Before(s.expires) {
			delete(ss.m, k)
		}
	}
}

// openStream counts a stream of s against the per-session bound.
func (ss *sessions) openStream(s *session, max int) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s.streams >= max {
		return false
	}
	s.streams++
	return true
}

func (ss *sessions) closeStream(s *session) {
	ss.mu.Lock()
	s.streams--
	ss.mu.Unlock()
}

// randomToken is 256 random bits, base64url.
func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func tokensEqual(a, b string) bool {
	return a != "" && len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: cookiePath, MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
}

func clearCookie(w http.ResponseWriter, r *http.Request, name string) { setCookie(w, r, name, "", -1) }

func cookieValue(r *http.Request, name string) string {
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return c.Value
}

// errSessionEnded is a session whose key or operator no longer admits it.
var errSessionEnded = errors.New("session ended")

// revalidate re-reads the session's key and operator: a revoked, expired
// or deleted key or a disabled or deleted operator ends it
// (errSessionEnded); a database error is returned as is and ends nothing.
func (d *Dashboard) revalidate(ctx context.Context, s *session) error {
	k, err := d.cfg.Store.GetAPIKey(ctx, s.tenant, s.keyID)
	if errors.Is(err, store.ErrNotFound) {
		return errSessionEnded
	} else if err != nil {
		return err
	}
	now := d.now()
	if !k.RevokedAt.IsZero() || (!k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt)) {
		return errSessionEnded
	}
	op, err := d.cfg.Store.GetOperator(ctx, s.tenant, s.operatorID)
	if errors.Is(err, store.ErrNotFound) {
		return errSessionEnded
	} else if err != nil {
		return err
	}
	if op.Disabled || !op.Role.Valid() || !k.Role.Valid() {
		return errSessionEnded
	}
	return nil
}

// authenticated returns the request's live session, revalidated. With
// none it answers itself (a redirect to the login page, or 401 when
// redirect is false) and returns false.
func (d *Dashboard) authenticated(w http.ResponseWriter, r *http.Request, redirect bool) (*session, string, bool) {
	id := cookieValue(r, sessionCookie)
	s, ok := d.sessions.get(id, d.now())
	if ok {
		err := d.revalidate(r.Context(), s)
		switch {
		case err == nil:
			return s, id, true
		case errors.Is(err, errSessionEnded):
			d.sessions.remove(id)
			d.log.Info("dashboard session ended: API key or operator no longer valid", "tenant", s.tenant, "key_id", s.keyID)
		default:
			d.log.Error("dashboard session check", "error", err)
			http.Error(w, "the control plane's database is unavailable; retry shortly", http.StatusServiceUnavailable)
			return nil, "", false
		}
	}
	if id != "" {
		clearCookie(w, r, sessionCookie)
	}
	if redirect {
		http.Redirect(w, r, loginPath, http.StatusSeeOther)
	} else {
		http.Error(w, "sign in at "+loginPath, http.StatusUnauthorized)
	}
	return nil, "", false
}

// handleLoginForm is GET /dashboard/login.
func (d *Dashboard) handleLoginForm(w http.ResponseWriter, r *http.Request) {
	if s, ok := d.sessions.get(cookieValue(r, sessionCookie), d.now()); ok && d.revalidate(r.Context(), s) == nil {
		http.Redirect(w, r, pagePath, http.StatusSeeOther)
		return
	}
	d.renderLogin(w, r, http.StatusOK, "")
}

// renderLogin writes the form with a fresh token, double-submitted in a
// cookie.
func (d *Dashboard) renderLogin(w http.ResponseWriter, r *http.Request, status int, problem string) {
	token := randomToken()
	setCookie(w, r, loginCookie, token, int(loginTokenTTL/time.Second))
	d.render(w, status, "login", loginView{CSRF: token, Error: problem})
}

type loginView struct {
	CSRF  string
	Error string
}

// postForm checks that a POST comes from the dashboard's own origin and
// parses its (small) form; false means it has answered.
func (d *Dashboard) postForm(w http.ResponseWriter, r *http.Request) bool {
	if err := d.origin.Check(r); err != nil {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return false
	}
	return true
}

// handleLogin is POST /dashboard/login: check origin and token, then the
// API key; swap it for a session.
func (d *Dashboard) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !d.postForm(w, r) {
		return
	}
	if !tokensEqual(r.PostForm.Get("csrf"), cookieValue(r, loginCookie)) {
		d.renderLogin(w, r, http.StatusForbidden, "The form expired; sign in again.")
		return
	}
	k, err := d.cfg.Store.AuthenticateAPIKey(r.Context(), strings.TrimSpace(r.PostForm.Get("api_key")))
	if errors.Is(err, store.ErrUnauthenticated) {
		d.log.Info("dashboard login refused", "remote", r.RemoteAddr)
		d.renderLogin(w, r, http.StatusUnauthorized, "Invalid API key.")
		return
	} else if err != nil {
		d.log.Error("dashboard login", "error", err)
		d.renderLogin(w, r, http.StatusServiceUnavailable, "The control plane cannot check keys right now; retry shortly.")
		return
	}
	if !k.Role.AtLeast(store.RoleViewer) {
		d.renderLogin(w, r, http.StatusForbidden, "This API key cannot read.")
		return
	}
	op, err := d.cfg.Store.GetOperator(r.Context(), k.Tenant, k.OperatorID)
	if err != nil {
		d.log.Error("dashboard login: operator", "error", err)
		d.renderLogin(w, r, http.StatusServiceUnavailable, "The control plane cannot check keys right now; retry shortly.")
		return
	}
	now := d.now()
	s := &session{tenant: k.Tenant, keyID: k.ID, operatorID: k.OperatorID, operator: op.Name, role: k.Role,
		created: now, expires: now.Add(d.cfg.SessionTTL), csrf: randomToken()}
	if !k.ExpiresAt.IsZero() && k.ExpiresAt.Before(s.expires) {
		s.expires = k.ExpiresAt
	}
	id, err := d.sessions.add(s, now)
	if err != nil {
		d.log.Warn("dashboard login refused", "error", err)
		d.renderLogin(w, r, http.StatusServiceUnavailable, "Too many open dashboard sessions; retry later.")
		return
	}
	d.log.Info("dashboard login", "tenant", k.Tenant, "key_id", k.ID, "role", string(k.Role))
	clearCookie(w, r, loginCookie)
	setCookie(w, r, sessionCookie, id, int(s.expires.Sub(now)/time.Second))
	http.Redirect(w, r, pagePath, http.StatusSeeOther)
}

// handleLogout is POST /dashboard/logout: the session ends on the server,
// whatever happens to the cookie.
func (d *Dashboard) handleLogout(w http.ResponseWriter, r *http.Request) {
	if !d.postForm(w, r) {
		return
	}
	id := cookieValue(r, sessionCookie)
	if s, ok := d.sessions.get(id, d.now()); ok {
		if !tokensEqual(r.PostForm.Get("csrf"), s.csrf) {
			http.Error(w, "bad form token", http.StatusForbidden)
			return
		}
		d.sessions.remove(id)
		d.log.Info("dashboard logout", "tenant", s.tenant, "key_id", s.keyID)
	}
	clearCookie(w, r, sessionCookie)
	http.Redirect(w, r, loginPath, http.StatusSeeOther)
}
