package dashboard

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Event stream framing.
const (
	eventPatch  = "patch"
	eventLogout = "logout"
	// retryMillis is the browser's reconnection delay.
	retryMillis = 3000
	// writeTimeout bounds each write to a stream: a client that stops
	// reading is dropped.
	writeTimeout = 30 * time.Second
)

type patchMessage struct {
	Patches []part `json:"patches"`
}

// handleEvents is GET /dashboard/events: a text/event-stream of the
// changes to what the page shows.
func (d *Dashboard) handleEvents(w http.ResponseWriter, r *http.Request) {
	s, id, ok := d.authenticated(w, r, false)
	if !ok {
		return
	}
	select {
	case <-d.stopping:
		w.Header().Set("Retry-After", "5")
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	default:
	}
	select {
	case d.streamSlots <- struct{}{}:
		defer func() { <-d.streamSlots }()
	default:
		d.log.Warn("dashboard event stream refused: too many open streams", "max", d.cfg.MaxStreams)
		w.Header().Set("Retry-After", "30")
		http.Error(w, "too many open event streams", http.StatusServiceUnavailable)
		return
	}
	if !d.sessions.openStream(s, d.cfg.MaxStreamsPerSession) {
		w.Header().Set("Retry-After", "30")
		http.Error(w, "too many open event streams for this session", http.StatusServiceUnavailable)
		return
	}
	defer d.sessions.closeStream(s)

	rc := http.NewResponseController(w)
	// The listener's ReadTimeout would cancel the request once it passes;
	// the stream has no body to read.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)

	st := &stream{w: w, rc: rc}
	if err := st.send(func(w io.Writer) error { _, err := fmt.Fprintf(w, "retry: %d\n\n", retryMillis); return err }); err != nil {
		return
	}
	ctx := r.Context()
	var last *rendered
	tick := time.NewTicker(d.cfg.PollInterval)
	defer tick.Stop()
	beat := time.NewTicker(d.cfg.Heartbeat)
	defer beat.Stop()
	for {
		if err := d.revalidate(ctx, s); errors.Is(err, errSessionEnded) {
			d.sessions.remove(id)
			d.log.Info("dashboard session ended: API key or operator no longer valid", "tenant", s.tenant, "key_id", s.keyID)
			_ = st.event(eventLogout, "{}")
			return
		} else if err != nil {
			d.log.Warn("dashboard stream: session check", "error", err)
		} else if _, live := d.sessions.get(id, d.now()); !live {
			_ = st.event(eventLogout, "{}") // logged out elsewhere, or expired
			return
		} else if next, err := d.snaps.get(ctx, s.tenant, d.cfg.PollInterval/2); err != nil {
			d.log.Warn("dashboard stream: read the fleet", "tenant", s.tenant, "error", err)
		} else if patches := diff(last, next); len(patches) > 0 {
			b, err := json.Marshal(patchMessage{Patches: patches})
			if err != nil {
				d.log.Error("dashboard stream: encode", "error", err)
				return
			}
			if err := st.event(eventPatch, string(b)); err != nil {
				return
			}
			last = next
			beat.Reset(d.cfg.Heartbeat)
		}
		select {
		case <-ctx.Done():
			return
		case <-d.stopping:
			return
		case <-beat.C:
			if err := st.send(func(w io.Writer) error { _, err := io.WriteString(w, ": keepalive\n\n"); return err }); err != nil {
				return
			}
			continue
		case <-tick.C:
		}
	}
}

// stream writes server-sent events, flushing each.
type stream struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	id int
}

func (s *stream) send(write func(io.Writer) error) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := write(s.w); err != nil {
		return err
	}
	return s.rc.Flush()
}

// event writes one event; data must be a single line (JSON is).
func (s *stream) event(name, data string) error {
	s.id++
	return s.send(func(w io.Writer) error {
		_, err := io.WriteString(w, "event: "+name+"\nid: "+strconv.Itoa(s.id)+"\ndata: "+data+"\n\n")
		return err
	})
}
