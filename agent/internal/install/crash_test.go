package install

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// copyDir copies a stopped device's state directory.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// adopt makes e a copy of the device in dir, whose packages are pkgs.
func (e *env) adopt(dir string, pkgs ...*testPackage) {
	copyDir(e.t, dir, e.dir)
	for _, p := range pkgs {
		e.cp.addPackage(p)
		e.mu.Lock()
		e.markers = append(e.markers, p.marker)
		e.mu.Unlock()
	}
}

// deviceWith returns the state directory of a device that installed pkgs
// in order.
func deviceWith(t *testing.T, pkgs ...*testPackage) string {
	e := newEnv(t)
	e.adopt(t.TempDir(), pkgs...)
	for i, p := range pkgs {
		if rec := e.install(fmt.Sprintf("job-%d", i+1), p); rec.State != wire.JobCommitted {
			t.Fatalf("base install of %s: %+v", p.ref.Version, rec)
		}
	}
	return e.dir
}

type crashScenario struct {
	name    string
	device  string         // state directory to start from
	pkgs    []*testPackage // the device's and the job's packages
	job     wire.Job
	before  *testPackage // serving before the job
	after   *testPackage // serving after a clean run
	outcome string       // terminal state of a clean run
	reason  string
}

// run runs the scenario's job on a copy of the device, stopping at
// checkpoint point (never when point is "") as a SIGKILL would, then
// restarts it and lets the job finish. It returns the checkpoints the
// first process passed, the job's final record, and the running process.
func (sc *crashScenario) run(t *testing.T, point string) ([]string, *jobRecord, *env, *proc) {
	e := newEnv(t)
	e.adopt(sc.device, sc.pkgs...)
	e.cp.addJob(sc.job, true)
	var mu sync.Mutex
	var passed []string
	p := e.start(func(pt string) bool {
		mu.Lock()
		defer mu.Unlock()
		passed = append(passed, pt)
		return pt == point
	})
	if point != "" {
		p.waitCrash(point)
		p = e.start(nil)
	}
	rec := p.wait(sc.job.ID)
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(passed), rec, e, p
}

// TestCrashAtEveryCheckpoint kills the pipeline at every checkpoint of an
// install, of an install whose self-test fails, and of a rollback job, and
// restarts it on the same state: the job always ends, by the documented
// rule, and the device always serves a working model.
func TestCrashAtEveryCheckpoint(t *testing.T) {
	t.Parallel()
	v1 := buildPackage(t, pkgOpts{version: "1.0.0"})
	v2 := buildPackage(t, pkgOpts{version: "2.0.0"})
	bad := buildPackage(t, pkgOpts{version: "2.0.0", badSelfTest: true})
	with1 := deviceWith(t, v1)
	with12 := deviceWith(t, v1, v2)
	scenarios := []*crashScenario{
		{name: "install", device: with1, pkgs: []*testPackage{v1, v2},
			job:    wire.Job{ID: "job-x", Kind: wire.JobInstall, Package: v2.ref},
			before: v1, after: v2, outcome: wire.JobCommitted},
		{name: "self-test fails", device: with1, pkgs: []*testPackage{v1, bad},
			job:    wire.Job{ID: "job-x", Kind: wire.JobInstall, Package: bad.ref},
			before: v1, after: v1, outcome: wire.JobFailed, reason: wire.JobReasonSelfTest},
		{name: "rollback", device: with12, pkgs: []*testPackage{v1, v2},
			job:    wire.Job{ID: "job-x", Kind: wire.JobRollback, Package: v1.ref},
			before: v2, after: v1, outcome: wire.JobRolledBack},
	}
	runs := 0
	for _, sc := range scenarios {
		points, rec, _, p := sc.run(t, "")
		p.stop()
		if rec.State != sc.outcome || rec.Reason != sc.reason {
			t.Fatalf("%s without a crash: %s %s %s", sc.name, rec.State, rec.Reason, rec.Detail)
		}
		t.Logf("%s: %d checkpoints: %v", sc.name, len(points), points)
		idx := func(p string) int {
			i := slices.Index(points, p)
			if i < 0 {
				t.Fatalf("%s: checkpoint %s not passed", sc.name, p)
			}
			return i
		}
		iInstalling, iTrial, iEnd := idx("persisted:"+wire.JobInstalling), idx("persisted:"+wire.JobSelfTest), idx("persisted:"+sc.outcome)
		for i, point := range points {
			if slices.Index(points, point) != i {
				t.Fatalf("%s: checkpoint %s passed twice", sc.name, point)
			}
			runs++
			// The rule: before installing, the job resumes and ends as a
			// clean run would; interrupted while loading, it fails
			// without change; interrupted after activation, it fails and
			// the previous slot is restored; after the commit
			// transaction, it is done.
			state, reason, serving := sc.outcome, sc.reason, sc.after
			switch {
			case i >= iInstalling && i < iTrial:
				state, reason, serving = wire.JobFailed, wire.JobReasonActivation, sc.before
			case i >= iTrial && i < iEnd:
				state, reason, serving = wire.JobFailed, wire.JobReasonSelfTest, sc.before
			}
			t.Run(fmt.Sprintf("%s/%02d-%s", sc.name, i, point), func(t *testing.T) {
				t.Parallel()
				_, rec, e, p := sc.run(t, point)
				defer func() { p.stop() }()
				if rec.State != state || rec.Reason != reason {
					t.Fatalf("job ended %s %s (%s), want %s %s", rec.State, rec.Reason, rec.Detail, state, reason)
				}
				p.waitServes(serving)
				s := p.slots()
				if !s.Active.Committed || s.Active.PackageID != serving.ref.ID {
					t.Errorf("active slot %+v", s.Active)
				}
				keep := []string{s.Active.Path}
				if s.Previous != nil {
					keep = append(keep, s.Previous.Path)
				}
				for _, f := range e.packageFiles() {
					if !slices.Contains(keep, f) {
						t.Errorf("package file %s left behind (slots hold %v)", f, keep)
					}
				}
				if point == "download:partial" {
					resumed := false
					for _, r := range e.cp.rangesSeen() {
						resumed = resumed || (strings.HasPrefix(r, "bytes=") && r != "bytes=0-")
					}
					if !resumed {
						t.Errorf("no Range request resumed the download: %q", e.cp.rangesSeen())
					}
				}
				p.stop()
				p = e.start(nil) // reports drained; and a further restart changes nothing
				p.waitServes(serving)
				if f := last(e.reportsFor(sc.job.ID)); f.State != state || f.Reason != reason || f.InstalledVersion != serving.ref.Version {
					t.Errorf("final report %+v", f)
				}
				uniqueMsgIDs(t, e)
			})
		}
	}
	if runs < 20 {
		t.Fatalf("only %d crash runs", runs)
	}
}
