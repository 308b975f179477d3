package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat; it
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// proc is a child process the benchmark started. Every proc is registered
// so that stopAll can end them when the benchmark fails half-way.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

var (
	procsMu sync.Mutex
	procs   []*proc
)

// startProc starts bin with args, stdout and stderr appended to logPath.
func startProc(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to timeout, then kills.
func (p *proc) stop(timeout time.Duration) error {
	if p.exited() {
		return p.err
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", p.name, timeout)
	}
}

// tail returns the last lines of the process's log, for error messages.
func (p *proc) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// stopAll ends every child still running (on failure or interrupt).
func stopAll() {
	procsMu.Lock()
	defer procsMu.Unlock()
	for _, p := range procs {
		if !p.exited() {
			_ = p.stop(5 * time.Second)
		}
	}
}

// usage is one reading of a process's resident set and CPU time.
type usage struct {
	at     time.Time
	rssKiB int64
	cpu    time.Duration // utime + stime
	user   time.Duration // utime
	sys    time.Duration // stime
}

// readUsage reads VmRSS from /proc/PID/status and utime+stime from
// /proc/PID/stat.
func readUsage(pid int) (usage, error) {
	u := usage{at: time.Now()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				u.rssKiB, _ = strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields that follow start after the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return u, errors.New("malformed /proc/PID/stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return u, errors.New("short /proc/PID/stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return u, err
	}
	u.user = time.Duration(ut) * time.Second / clockTicks
	u.sys = time.Duration(st) * time.Second / clockTicks
	u.cpu = u.user + u.sys
	return u, nil
}

// window summarises a process over a measured interval.
type window struct {
	Seconds    float64 `json:"seconds"`
	CPUPercent float64 `json:"cpu_percent"` // of one core
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSMeanMiB float64 `json:"rss_mean_mib"`
	RSSMaxMiB  float64 `json:"rss_max_mib"`
	RSSEndMiB  float64 `json:"rss_end_mib"`
}

// sample reads pid's usage every second for d and summarises it. CPU is
// the utime+stime delta over the wall time between the first and the last
// reading (10 ms resolution, so a window of 60 s resolves 0.02 %).
func sample(pid int, d time.Duration, stop <-chan struct{}) (window, error) {
	first, err := readUsage(pid)
	if err != nil {
		return window{}, err
	}
	var sum, n, maxKiB int64 = first.rssKiB, 1, first.rssKiB
	last := first
	end := first.at.Add(d)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for time.Now().Before(end) {
		select {
		case <-t.C:
		case <-stop:
			return window{}, errors.New("interrupted")
		}
		u, err := readUsage(pid)
		if err != nil {
			return window{}, err
		}
		last = u
		sum += u.rssKiB
		n++
		maxKiB = max(maxKiB, u.rssKiB)
	}
	return between(first, last, float64(sum)/float64(n)/1024, float64(maxKiB)/1024), nil
}

// between is the window from a to b; mean and max RSS are given.
func between(a, b usage, meanMiB, maxMiB float64) window {
	wall := b.at.Sub(a.at).Seconds()
	cpu := (b.cpu - a.cpu).Seconds()
	w := window{Seconds: wall, CPUSeconds: cpu, RSSMeanMiB: meanMiB, RSSMaxMiB: maxMiB, RSSEndMiB: float64(b.rssKiB) / 1024}
	if wall > 0 {
		w.CPUPercent = 100 * cpu / wall
	}
	return w
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitTCP waits until addr accepts connections or p exits.
func waitTCP(addr string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited (%v) before listening on %s:\n%s", p.name, p.err, addr, p.tail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %s", addr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
