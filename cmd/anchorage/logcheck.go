package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/postgres"
)

// Files in the NATS store dir that record a damaged event log.
const (
	// lostDataMarker is written when damage is found and removed only once the operator accepted the loss and
	// the read models were rebuilt from what is left: while it exists no node starts on this store, even if the
	// evidence (a projection checkpoint ahead of the log) has meanwhile gone, say with the database.
	lostDataMarker = "LOST-DATA"
	// acceptedLossFile records damage the operator accepted, so that the same, known gap does not stop every
	// later start; only new damage does.
	acceptedLossFile = "accepted-loss.json"
	// restoredMarker is written by `anchorage events import`: the log was restored from a backup, so the read
	// models (possibly ahead of it) are rebuilt from it at the next start, and earlier damage is history.
	restoredMarker = "RESTORED"
)

// acceptedLoss is the content of acceptedLossFile.
type acceptedLoss struct {
	At      time.Time `json:"at"`
	Missing uint64    `json:"missing"`
	Lost    int       `json:"lost"`
	Detail  string    `json:"detail"`
}

// errLogDamaged is returned (wrapped) when the node refuses to start on a damaged log.
var errLogDamaged = errors.New("the event log is damaged")

// checkLog looks for events missing from the log before anything reads or writes it: sequences the stream
// should hold but does not, losses the server reported while recovering its files, and read models that have
// applied events beyond the end of the log (its tail is gone). Starting on such a log would hand out the lost
// sequences again to new events, which projectors would then skip: a silent divergence. So the node refuses
// to start, says what is missing and how to recover, and leaves a marker file; with acceptLoss it logs the
// loss, records it as accepted and returns rebuild = true: the read models must be rebuilt from the log as it
// now is (done() is to be called once that rebuild finished; it removes the marker).
func (a *app) checkLog(ctx context.Context, acceptLoss bool) (rebuild bool, done func(), err error) {
	storeDir := a.cfg.NATSStoreDir()
	marker := filepath.Join(storeDir, lostDataMarker)
	d, err := a.elog.CheckIntegrity(ctx)
	if err != nil {
		return false, nil, err
	}
	restored := filepath.Join(storeDir, restoredMarker)
	if note, err := os.ReadFile(restored); err == nil {
		if d.Missing > 0 || len(d.Lost) > 0 {
			return false, nil, fmt.Errorf("%w: the log restored from a backup is itself incomplete: %s", errLogDamaged, d)
		}
		for _, f := range []string{marker, filepath.Join(storeDir, acceptedLossFile)} {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				return false, nil, err
			}
		}
		a.log.Warn("the event log was restored from a backup: rebuilding the read models from it", "restore", strings.TrimSpace(string(note)))
		return true, func() {
			if err := os.Remove(restored); err != nil && !errors.Is(err, os.ErrNotExist) {
				a.log.Error("could not remove the restore marker", "path", restored, "err", err)
			}
		}, nil
	}
	adm := postgres.NewAdmin(a.owner)
	names := make([]string, 0, len(postgres.ProjectionTables))
	for name := range postgres.ProjectionTables {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		cp, err := adm.Checkpoint(ctx, name)
		if err != nil {
			return false, nil, err
		}
		d.Ahead = max(d.Ahead, cp)
	}
	var acc acceptedLoss
	if b, err := os.ReadFile(filepath.Join(storeDir, acceptedLossFile)); err == nil {
		if err := json.Unmarshal(b, &acc); err != nil {
			return false, nil, fmt.Errorf("%s: %w (delete it to have every gap in the log reported again)", filepath.Join(storeDir, acceptedLossFile), err)
		}
	}
	damaged := d.Missing > acc.Missing || len(d.Lost) > acc.Lost || d.Ahead > d.LastSeq
	prior, err := os.ReadFile(marker)
	switch {
	case err == nil:
	case errors.Is(err, os.ErrNotExist):
		prior = nil
	default:
		return false, nil, err
	}
	if !damaged && prior == nil {
		return false, nil, nil
	}
	detail := d.String()
	if !damaged {
		detail = "an earlier start found damage that was not yet recovered from: " + strings.TrimSpace(string(prior))
	}

	if !acceptLoss {
		if prior == nil {
			body := fmt.Sprintf("%s\n%s\n", time.Now().UTC().Format(time.RFC3339), detail)
			if err := os.WriteFile(marker, []byte(body), 0o600); err != nil {
				a.log.Error("could not write the lost-data marker", "path", marker, "err", err)
			}
		}
		a.log.Error("refusing to start: the event log is damaged", "damage", detail, "marker", marker)
		return false, nil, fmt.Errorf(`%w: %s.

Nothing has been changed. Recover in one of two ways:
  1. Restore the log from a backup: stop every node, move %s aside, run
     "anchorage events import --config <config> <backup file>", then start again
     (docs/backup.md, docs/recovery.md).
  2. Accept the loss: start once with --accept-log-loss. The missing events stay lost (they are logged),
     the read models are rebuilt from what the log still holds, and %s is removed when that is done`,
			errLogDamaged, detail, storeDir, marker)
	}

	a.log.Error("starting on a damaged event log: the loss was accepted (--accept-log-loss); the missing events are gone "+
		"and the read models are rebuilt from what the log holds", "damage", detail)
	acc = acceptedLoss{At: time.Now().UTC(), Missing: d.Missing, Lost: len(d.Lost), Detail: detail}
	b, _ := json.MarshalIndent(acc, "", "  ")
	if err := writeFileSync(filepath.Join(storeDir, acceptedLossFile), b); err != nil {
		return false, nil, err
	}
	return true, func() {
		if err := os.Remove(marker); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.log.Error("could not remove the lost-data marker", "path", marker, "err", err)
			return
		}
		a.log.Info("recovered from the damaged event log: read models rebuilt, marker removed", "marker", marker)
	}, nil
}

// writeFileSync writes a small file durably (temp file, fsync, rename, fsync of the directory).
func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return syncAndRename(f, path)
}

// syncAndRename makes the written temporary file f durable, closes it and renames it to path, durably: a crash
// leaves either the old file or the new one whole.
func syncAndRename(f *os.File, path string) error {
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return eventsSyncDir(filepath.Dir(path))
}
