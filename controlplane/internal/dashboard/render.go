package dashboard

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"strings"
	"time"
)

//go:embed templates/dashboard.html
var templateFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"ts": formatTime,
}).ParseFS(templateFS, "templates/dashboard.html"))

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// part is one element the page can replace by id: a section, or a row of
// one.
type part struct {
	ID   string `json:"id"`
	HTML string `json:"html"`
}

// section is a part made of rows (nil for a section replaced only whole).
type section struct {
	part
	rows []part
}

// rendered is a view as HTML, section by section, in page order. Each
// section's HTML is exactly its rows' HTML inside its wrapper, so a row
// sent alone and the section sent whole always agree.
type rendered struct {
	summary, fleets, devices, rollouts section
}

func (r *rendered) sections() []*section {
	return []*section{&r.summary, &r.fleets, &r.devices, &r.rollouts}
}

func execute(name string, data any) (string, error) {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

// build renders each item as a row and wraps the rows in the section's
// element (open must carry the id).
func build[T any](id, open, close, rowTmpl, emptyTmpl string, items []T, rowID func(T) string, extra ...part) (section, error) {
	s := section{part: part{ID: id}}
	for _, it := range items {
		h, err := execute(rowTmpl, it)
		if err != nil {
			return section{}, err
		}
		s.rows = append(s.rows, part{ID: rowID(it), HTML: h})
	}
	if len(items) == 0 {
		h, err := execute(emptyTmpl, nil)
		if err != nil {
			return section{}, err
		}
		s.rows = append(s.rows, part{ID: id + "-empty", HTML: h})
	}
	s.rows = append(s.rows, extra...)
	var b strings.Builder
	b.WriteString(open)
	for _, r := range s.rows {
		b.WriteString(r.HTML)
	}
	b.WriteString(close)
	s.HTML = b.String()
	return s, nil
}

func renderParts(v view) (*rendered, error) {
	var out rendered
	var err error
	h, err := execute("summary", v.Summary)
	if err != nil {
		return nil, err
	}
	out.summary = section{part: part{ID: "summary", HTML: h}}
	if out.fleets, err = build("fleets", `<tbody id="fleets">`, `</tbody>`, "fleet-row", "fleet-empty", v.Fleets,
		func(f fleetView) string { return "fleet-" + f.ID }); err != nil {
		return nil, err
	}
	var more []part
	if v.MoreDevices > 0 {
		h, err := execute("device-more", v.MoreDevices)
		if err != nil {
			return nil, err
		}
		more = append(more, part{ID: "devices-more", HTML: h})
	}
	if out.devices, err = build("devices", `<tbody id="devices">`, `</tbody>`, "device-row", "device-empty", v.Devices,
		func(d deviceView) string { return "device-" + d.ID }, more...); err != nil {
		return nil, err
	}
	if out.rollouts, err = build("rollouts", `<div id="rollouts">`, `</div>`, "rollout", "rollout-empty", v.Rollouts,
		func(r rolloutView) string { return "rollout-" + r.ID }); err != nil {
		return nil, err
	}
	return &out, nil
}

// diff returns the parts to replace so that a page showing prev shows
// next: changed rows, or a whole section when its rows came, went or moved.
// With prev nil it is every section.
func diff(prev, next *rendered) []part {
	var out []part
	ns := next.sections()
	if prev == nil {
		for _, s := range ns {
			out = append(out, s.part)
		}
		return out
	}
	for i, ps := range prev.sections() {
		s := ns[i]
		if ps.HTML == s.HTML {
			continue
		}
		if s.rows == nil || !sameIDs(ps.rows, s.rows) {
			out = append(out, s.part)
			continue
		}
		for j, r := range s.rows {
			if ps.rows[j].HTML != r.HTML {
				out = append(out, r)
			}
		}
	}
	return out
}

func sameIDs(a, b []part) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID {
			return false
		}
	}
	return true
}

type pageView struct {
	Tenant, Operator, Role, CSRF       string
	Summary, Fleets, Devices, Rollouts template.HTML
	Rendered                           time.Time
}

// render writes a full HTML document (templates "page" and "login").
func (d *Dashboard) render(w http.ResponseWriter, status int, name string, data any) {
	h, err := execute(name, data)
	if err != nil {
		d.log.Error("dashboard template", "template", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(h))
}

// handlePage is GET /dashboard/: the whole page, rendered on the server.
func (d *Dashboard) handlePage(w http.ResponseWriter, r *http.Request) {
	s, _, ok := d.authenticated(w, r, true)
	if !ok {
		return
	}
	parts, err := d.snaps.get(r.Context(), s.tenant, d.cfg.PollInterval/2)
	if err != nil {
		d.log.Error("dashboard: read the fleet", "tenant", s.tenant, "error", err)
		http.Error(w, "the control plane's database is unavailable; retry shortly", http.StatusServiceUnavailable)
		return
	}
	// The parts are html/template output: every name in them is escaped.
	d.render(w, http.StatusOK, "page", pageView{
		Tenant: s.tenant, Operator: s.operator, Role: string(s.role), CSRF: s.csrf,
		Summary: template.HTML(parts.summary.HTML), Fleets: template.HTML(parts.fleets.HTML), //nolint:gosec // escaped by html/template
		Devices: template.HTML(parts.devices.HTML), Rollouts: template.HTML(parts.rollouts.HTML), //nolint:gosec // escaped by html/template
		Rendered: d.now(),
	})
}
