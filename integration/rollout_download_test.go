package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRolloutDownloadResumes puts a TCP proxy between a real agent and the
// control plane (the agent's server_url; the TLS session goes through it
// untouched) and cuts the connection once 512 KiB of the 2 MiB package
// have gone through. The agent resumes from its partial file: the control
// plane's log shows the second request for the package had a Range
// header from the offset the agent logged, the proxy carried only the rest
// of the package after the cut, and the install commits.
func TestRolloutDownloadResumes(t *testing.T) {
	e := newRolloutEnv(t, 5*time.Second, cpOptions{})
	cp := e.cp
	px := startCutProxy(t, strings.TrimPrefix(cp.baseURL, "https://"))
	cp.tgctl("fleet", "create", "edge", "--allow-simulated-tpm")
	a := e.startAgents("edge", 1, agentSpec{firstSeed: 800, serverURL: "https://" + px.addr()})[0]

	p := e.push(e.pack(pkgSpec{version: "1.0.0", pad: 2 << 20}))
	const cutAt = 512 << 10
	px.arm(cutAt)
	r := cp.createRollout("mnist@1.0.0", "edge", "--device-timeout", "5m")
	r, j := rolloutJob(t, cp, r.ID)
	if j.State != "succeeded" || j.InstalledVersion != "1.0.0" {
		t.Fatalf("job %+v (rollout %s %s)", j, r.State, r.Detail)
	}
	waitServing(t, []*fleetAgent{a}, "mnist", "1.0.0")
	if n := px.cuts(); n != 1 {
		t.Fatalf("the proxy cut %d connections, want 1", n)
	}

	m := regexp.MustCompile(`package download interrupted.*?\boffset"?[=:](\d+)`).FindStringSubmatch(a.proc.log.String())
	if m == nil {
		t.Fatalf("the agent did not log an interrupted download")
	}
	offset, _ := strconv.ParseInt(m[1], 10, 64)
	if offset <= 0 || offset > cutAt || offset >= p.Size {
		t.Fatalf("download interrupted at %d of %d bytes; the proxy cut after %d", offset, p.Size, cutAt)
	}
	// The control plane logs each package request with its Range header:
	// the whole file first, then the rest from the agent's offset.
	var ranges []string
	re := regexp.MustCompile(`msg="package download".*\bpackage=` + p.ID + `\b.*?\brange=("[^"]*"|\S*)`)
	for line := range strings.Lines(cp.proc.log.String()) {
		if m := re.FindStringSubmatch(line); m != nil {
			ranges = append(ranges, strings.Trim(m[1], `"`))
		}
	}
	if want := []string{"", fmt.Sprintf("bytes=%d-", offset)}; !slices.Equal(ranges, want) {
		t.Fatalf("package requests with Range %q, want %q", ranges, want)
	}
	// And the proxy carried only the rest after the cut, not the package
	// again (TLS records and the small API answers add a few KiB).
	if after, rest := px.bytesAfterCut(), p.Size-offset; after < rest || after > rest+64<<10 {
		t.Fatalf("%d bytes went to the agent after the cut; the rest of the package is %d", after, rest)
	}
	t.Logf("cut after %d bytes; resumed with Range bytes=%d- (%d bytes through the proxy after the cut)", cutAt, offset, px.bytesAfterCut())
	a.proc.stop(t, 15*time.Second)
	cp.shutdown()
}

// cutProxy forwards TCP connections to target. Armed with n, it cuts the
// first connection that carries n bytes towards the client after arming
// (both directions closed mid-stream), once.
type cutProxy struct {
	l      net.Listener
	target string
	wg     sync.WaitGroup

	mu       sync.Mutex
	armed    int64
	nCuts    int
	afterCut int64 // bytes towards clients since the cut
	conns    map[*proxyConn]bool
	closed   bool
}

type proxyConn struct {
	client, server net.Conn
	sinceArm       int64 // bytes towards the client since the proxy was armed
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &cutProxy{l: l, target: target, conns: map[*proxyConn]bool{}}
	px.wg.Add(1)
	go px.serve()
	t.Cleanup(px.close)
	return px
}

func (px *cutProxy) addr() string { return px.l.Addr().String() }

func (px *cutProxy) arm(n int64) {
	px.mu.Lock()
	defer px.mu.Unlock()
	px.armed = n
	for c := range px.conns {
		c.sinceArm = 0
	}
}

func (px *cutProxy) cuts() int {
	px.mu.Lock()
	defer px.mu.Unlock()
	return px.nCuts
}

func (px *cutProxy) bytesAfterCut() int64 {
	px.mu.Lock()
	defer px.mu.Unlock()
	return px.afterCut
}

func (px *cutProxy) close() {
	px.mu.Lock()
	px.closed = true
	for c := range px.conns {
		c.client.Close()
		c.server.Close()
	}
	px.mu.Unlock()
	px.l.Close()
	px.wg.Wait()
}

func (px *cutProxy) serve() {
	defer px.wg.Done()
	for {
		client, err := px.l.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", px.target)
		if err != nil {
			client.Close()
			continue
		}
		c := &proxyConn{client: client, server: server}
		px.mu.Lock()
		if px.closed {
			px.mu.Unlock()
			client.Close()
			server.Close()
			return
		}
		px.conns[c] = true
		px.mu.Unlock()
		px.wg.Add(2)
		go func() {
			defer px.wg.Done()
			_, _ = io.Copy(server, client)
			server.Close()
		}()
		go func() {
			defer px.wg.Done()
			px.toClient(c)
			client.Close()
			px.mu.Lock()
			delete(px.conns, c)
			px.mu.Unlock()
		}()
	}
}

// toClient copies server → client, cutting the connection where the
// armed count ends.
func (px *cutProxy) toClient(c *proxyConn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.server.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			px.mu.Lock()
			cut := false
			if px.nCuts > 0 {
				px.afterCut += int64(n)
			}
			if px.armed > 0 {
				if rest := px.armed - c.sinceArm; int64(n) >= rest {
					chunk, cut = chunk[:rest], true
					px.armed = 0
					px.nCuts++
				} else {
					c.sinceArm += int64(n)
				}
			}
			px.mu.Unlock()
			if _, werr := c.client.Write(chunk); werr != nil || cut {
				c.server.Close()
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.server.Close()
			}
			return
		}
	}
}
