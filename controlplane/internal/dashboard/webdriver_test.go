package dashboard_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// A minimal W3C WebDriver client (https://www.w3.org/TR/webdriver2/) over
// net/http, enough to drive Debian's chromium through chromedriver: a
// session, navigation, elements, script and screenshots.

const (
	chromiumPath     = "/usr/bin/chromium"
	chromedriverPath = "/usr/bin/chromedriver"
	// webElementKey names an element reference in WebDriver JSON.
	webElementKey = "element-6066-11e4-a52e-4f735466cecf"
)

type webDriver struct {
	t    *testing.T
	base string // http://127.0.0.1:port/session/<id>
	c    *http.Client
}

// needChromium skips the test when chromium or chromedriver is missing,
// unless CI=true, where that is a failure.
func needChromium(t *testing.T) {
	t.Helper()
	for _, bin := range []string{chromiumPath, chromedriverPath} {
		if _, err := os.Stat(bin); err != nil {
			msg := fmt.Sprintf("%s not found: install it with hack/install-deps.sh (apt-get install -y chromium chromium-driver)", bin)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

// startChromium starts chromedriver and a headless chromium session; both
// end at cleanup (the session is deleted, then chromedriver's process
// group is killed by id).
func startChromium(t *testing.T) *webDriver {
	t.Helper()
	needChromium(t)
	port := freePort(t)
	logFile, err := os.Create(t.TempDir() + "/chromedriver.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(chromedriverPath, "--port="+strconv.Itoa(port), "--allowed-ips=127.0.0.1", "--log-path="+logFile.Name())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so that cleanup ends chromium with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromedriver: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil && len(b) > 0 {
				if len(b) > 8000 {
					b = b[len(b)-8000:]
				}
				t.Logf("chromedriver log (tail):\n%s", b)
			}
		}
	})
	root := "http://127.0.0.1:" + strconv.Itoa(port)
	c := &http.Client{Timeout: 90 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Get(root + "/status")
		if err == nil {
			var st struct {
				Value struct {
					Ready bool `json:"ready"`
				} `json:"value"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if st.Value.Ready {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromedriver not ready within 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName":         "chrome",
		"acceptInsecureCerts": true, // the control plane's own CA
		"goog:chromeOptions": map[string]any{
			"binary": chromiumPath,
			"args": []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
				"--user-data-dir=" + t.TempDir(), "--window-size=1360,1000", "--no-first-run", "--disable-extensions"},
		},
	}}}
	var created struct {
		SessionID string `json:"sessionId"`
	}
	wd := &webDriver{t: t, base: root, c: c}
	if err := wd.call("POST", "/session", caps, &created); err != nil {
		t.Fatalf("new chromium session: %v", err)
	}
	wd.base = root + "/session/" + created.SessionID
	t.Cleanup(func() { _ = wd.call("DELETE", "", nil, nil) })
	return wd
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// call sends one command and decodes its "value" into out.
func (wd *webDriver) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, wd.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := wd.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Value struct {
				Error   string `json:"error"`
				Message string `json:"message"`
			} `json:"value"`
		}
		_ = json.Unmarshal(raw, &e)
		return fmt.Errorf("webdriver %s %s: %d %s: %s", method, path, resp.StatusCode, e.Value.Error, e.Value.Message)
	}
	if out == nil {
		return nil
	}
	var v struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	return json.Unmarshal(v.Value, out)
}

func (wd *webDriver) must(err error) {
	wd.t.Helper()
	if err != nil {
		wd.t.Fatal(err)
	}
}

func (wd *webDriver) navigate(url string) {
	wd.t.Helper()
	wd.must(wd.call("POST", "/url", map[string]string{"url": url}, nil))
}

func (wd *webDriver) currentURL() string {
	wd.t.Helper()
	var u string
	wd.must(wd.call("GET", "/url", nil, &u))
	return u
}

// find returns the element matching a CSS selector.
func (wd *webDriver) find(css string) string {
	wd.t.Helper()
	var el map[string]string
	wd.must(wd.call("POST", "/element", map[string]string{"using": "css selector", "value": css}, &el))
	id := el[webElementKey]
	if id == "" {
		wd.t.Fatalf("no element reference for %s: %v", css, el)
	}
	return id
}

func (wd *webDriver) typeInto(css, text string) {
	wd.t.Helper()
	wd.must(wd.call("POST", "/element/"+wd.find(css)+"/value", map[string]string{"text": text}, nil))
}

func (wd *webDriver) click(css string) {
	wd.t.Helper()
	wd.must(wd.call("POST", "/element/"+wd.find(css)+"/click", map[string]any{}, nil))
}

// script runs a synchronous script and decodes its return value into out.
func (wd *webDriver) script(js string, out any, args ...any) {
	wd.t.Helper()
	if args == nil {
		args = []any{}
	}
	wd.must(wd.call("POST", "/execute/sync", map[string]any{"script": js, "args": args}, out))
}

// text is the rendered text of the first element matching css ("" if none).
func (wd *webDriver) text(css string) string {
	wd.t.Helper()
	var s string
	wd.script(`const e = document.querySelector(arguments[0]); return e ? e.innerText : "";`, &s, css)
	return s
}

// waitFor polls cond until it is true or the timeout passes.
func (wd *webDriver) waitFor(what string, timeout time.Duration, cond func() bool) {
	wd.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			wd.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (wd *webDriver) screenshot() ([]byte, error) {
	var b64 string
	if err := wd.call("GET", "/screenshot", nil, &b64); err != nil {
		return nil, err
	}
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		return nil, errors.New("screenshot is not a PNG")
	}
	return png, nil
}
