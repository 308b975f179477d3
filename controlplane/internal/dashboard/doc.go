// Package dashboard is the control plane's read-only fleet dashboard: one
// server-rendered page under /dashboard/ that shows a tenant's fleets, its
// devices with their online state and attestation verdict, and its recent
// rollouts with the progress of each wave, kept current in the browser by
// server-sent events.
//
// The control plane mounts [Dashboard] at "/dashboard/" on its one listener
// and runs [Dashboard.Run] as a task:
//
//	d := dashboard.New(dashboard.Config{Store: st})
//	mux.Handle("/dashboard/", d)
//	g.Go(func() error { return d.Run(ctx) })
//
// Routes: GET /dashboard/ (the page), GET and POST /dashboard/login, POST
// /dashboard/logout, GET /dashboard/events (the event stream), GET
// /dashboard/static/{dashboard.css,dashboard.js}.
//
// # Who may see what
//
// A browser cannot send the API's bearer header, so the login form takes an
// API key once and swaps it for a session: a random 256-bit id in a cookie
// (HttpOnly, SameSite=Strict, Path=/dashboard, Secure when the request came
// over TLS). The key itself is never stored, logged or put in the cookie;
// the server keeps, under the SHA-256 of the session id, the key's id and
// tenant. Any role can read (viewer and up). Every page request and every
// tick of an event stream re-reads the key and its operator, so a revoked or
// expired key, a disabled operator or a deleted one ends the session at
// once (an open stream gets a "logout" event and is closed). Sessions also
// end at logout and after [Config.SessionTTL] (never later than the key's
// own expiry), and live in this process's memory: they do not survive a
// restart, and behind several replicas the load balancer must keep a
// browser on one replica (or the operator signs in again).
//
// Everything shown is read with the session's tenant; nothing crosses
// tenants. Names come from operators and devices and are escaped by
// html/template, in the page and in the fragments the event stream sends.
//
// Login and logout are POST forms checked three ways: net/http's
// CrossOriginProtection (Sec-Fetch-Site / Origin), a form token (login: a
// double-submitted cookie; logout: the session's own token) and the
// SameSite=Strict cookie. Every response forbids framing (CSP
// frame-ancestors 'none', X-Frame-Options DENY) and carries a
// Content-Security-Policy that admits only this server's own stylesheet and
// script: there is no inline script or style, so no nonce is needed.
//
// # Live updates
//
// The stream does not hook into the control plane's internal events: it
// re-reads the store on a short tick ([Config.PollInterval], 2 s by
// default), through a per-tenant cache that all of the tenant's streams
// share, and sends only what changed since its last message — a row of the
// device, fleet or rollout tables, or a whole table when rows came or went.
// Reading the store sees changes made by every replica (presence, verdicts
// and job reports are applied by whichever replica received them), survives
// missed notifications, and costs a few indexed queries per tenant per tick.
// A stream first sends every section in full, so a page that was rendered a
// moment earlier, or one reconnecting, is brought up to date.
//
// Framing: "retry: 3000", then events "patch" (data: {"patches":[{"id",
// "html"}]}, the element to replace by id and its new outer HTML) and
// "logout"; a comment line (": keepalive") every [Config.Heartbeat] so that
// proxies keep an idle stream open. A stream clears the server's read
// deadline and extends its write deadline before each write, so it outlives
// the listener's request timeouts but not a client that stops reading.
// [Config.MaxStreams] bounds the open streams of the process and
// [Config.MaxStreamsPerSession] those of one session; past them the stream
// is refused with 503 and Retry-After. When Run's context ends (the control
// plane shuts down), every stream returns at once, so the HTTP server's
// graceful shutdown is not held up by them.
//
// Without JavaScript the page is complete as rendered (and refreshes itself
// every 30 s); with it, dashboard.js applies the patches in place.
package dashboard
