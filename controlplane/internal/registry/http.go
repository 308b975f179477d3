package registry

import (
	"io"
	"net/http"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// Transfers of packages outlive the server's whole-request timeouts (60 s):
// for them, the read (upload) or write (download) deadline moves forward
// while bytes flow, so a transfer may take as long as it needs but a stalled
// peer is dropped after TransferIdleTimeout.

// TransferIdleTimeout is how long a package upload or download may make no
// progress before its connection is closed.
const TransferIdleTimeout = 60 * time.Second

// deadlineStep limits how often a deadline is moved.
const deadlineStep = time.Second

// UploadBody returns r's body for a streamed package upload: each read
// pushes the connection's read deadline TransferIdleTimeout ahead, and the
// write deadline is lifted until the caller answers (call
// PrepareResponse first). Where the connection does not support deadlines
// (tests over a recorder), the body is returned as it is.
func UploadBody(w http.ResponseWriter, r *http.Request) io.Reader {
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Time{}); err != nil {
		return r.Body
	}
	return &progressReader{r: r.Body, set: rc.SetReadDeadline}
}

// PrepareResponse gives the answer to a long upload a fresh write deadline.
func PrepareResponse(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(TransferIdleTimeout))
}

// ServeBlob answers a GET or HEAD for a stored package with
// http.ServeContent: Range and If-Range (the ETag is the package id, the
// content never changes), 206 and 416 as the RFC says, so an interrupted
// download resumes where it stopped. The write deadline moves forward
// while the body is being sent.
func ServeBlob(w http.ResponseWriter, r *http.Request, p store.Package, b Blob) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+p.ID+`"`)
	h.Set("Cache-Control", "private, max-age=0")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Disposition", `attachment; filename="`+p.Name+"-"+p.Version+`.tgsp"`)
	var content io.ReadSeeker = io.NewSectionReader(b, 0, b.Size())
	rc := http.NewResponseController(w)
	if rc.SetWriteDeadline(time.Now().Add(TransferIdleTimeout)) == nil {
		content = &progressReadSeeker{ReadSeeker: content, pr: progressReader{set: rc.SetWriteDeadline}}
	}
	http.ServeContent(w, r, "", b.ModTime(), content)
}

// progressReader moves a deadline TransferIdleTimeout ahead as it reads.
type progressReader struct {
	r    io.Reader
	set  func(time.Time) error
	last time.Time
}

func (p *progressReader) Read(b []byte) (int, error) {
	p.touch()
	return p.r.Read(b)
}

func (p *progressReader) touch() {
	if now := time.Now(); now.Sub(p.last) >= deadlineStep {
		p.last = now
		_ = p.set(now.Add(TransferIdleTimeout))
	}
}

type progressReadSeeker struct {
	io.ReadSeeker
	pr progressReader
}

func (p *progressReadSeeker) Read(b []byte) (int, error) {
	p.pr.touch()
	return p.ReadSeeker.Read(b)
}
