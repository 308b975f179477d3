package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// slots reads the active and previous slot.
func (in *Installer) slots() (slotPair, error) {
	var p slotPair
	err := in.view(func(tx *bolt.Tx) error {
		var err error
		p, err = getSlots(tx)
		return err
	})
	return p, err
}

// recover runs once at start: it ends every job interrupted during
// activation (rolling back the slots if it had activated), removes files no
// slot or open job needs, and loads the active slot.
func (in *Installer) recover(ctx context.Context) error {
	if err := initStore(in.cfg.Store); err != nil {
		return fmt.Errorf("%w: %w", errStorage, err)
	}
	var stuck []*jobRecord
	if err := in.view(func(tx *bolt.Tx) error {
		jobs, err := listJobs(tx)
		for _, r := range jobs {
			if r.State == wire.JobInstalling || r.State == wire.JobSelfTest {
				stuck = append(stuck, r)
			}
		}
		return err
	}); err != nil {
		return err
	}
	for _, r := range stuck {
		if err := in.finish(r, interrupted(r)); err != nil {
			return err
		}
	}
	in.gc()
	slots, err := in.slots()
	if err != nil || slots.Active == nil {
		return err
	}
	lm, _, err := in.loadSlot(ctx, slots.Active)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		in.log.Error("the active model could not be loaded; inference is unavailable until a new install",
			"name", slots.Active.Name, "version", slots.Active.Version, "err", err)
		return nil
	}
	in.serve(lm)
	in.log.Info("active model loaded", "name", lm.slot.Name, "version", lm.slot.Version)
	return nil
}

// gc removes downloads and packages that neither a slot nor an open job
// needs. It is idempotent and safe at any point: what it keeps is read in
// one transaction.
func (in *Installer) gc() {
	keep := map[string]bool{}
	err := in.view(func(tx *bolt.Tx) error {
		p, err := getSlots(tx)
		if err != nil {
			return err
		}
		for _, s := range []*Slot{p.Active, p.Previous} {
			if s != nil {
				keep[filepath.Base(s.Path)] = true
			}
		}
		jobs, err := listJobs(tx)
		for _, r := range jobs {
			if !wire.JobTerminal(r.State) {
				keep[r.Job.Package.ID+".tgsp"] = true
				keep[r.Job.Package.ID+".partial"] = true
			}
		}
		return err
	})
	if err != nil {
		in.log.Warn("package cleanup skipped", "err", err)
		return
	}
	entries, err := os.ReadDir(in.cfg.PackageDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if keep[name] || !(strings.HasSuffix(name, ".tgsp") || strings.HasSuffix(name, ".partial")) {
			continue
		}
		if err := os.Remove(filepath.Join(in.cfg.PackageDir, name)); err != nil {
			in.log.Warn("remove unused package", "file", name, "err", err)
		}
	}
}
