package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/kubo"
	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/adapters/postgres"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Buckets of the KV store that hold presence and the scheduler's lease (not events: liveness only).
const (
	presenceBucket = "anchorage_presence"
	leaseBucket    = "anchorage_leader"
	presenceTTL    = 15 * time.Second
	presenceEvery  = 5 * time.Second
)

// startNode makes this process a storage node: it registers the node with its Kubo's identity (an event only
// when something changed), publishes its presence, and runs its worker.
//
// nodeID "" means kubo.nodeID or the id derived at the data dir's first start. One process normally runs one
// node; tests run several (each with its own Kubo) against one event log.
func (a *app) startNode(ctx context.Context, kc *kubo.Client, nodeID string) error {
	id, err := kc.ID(ctx)
	if err != nil {
		return fmt.Errorf("the node's Kubo (kubo.rpcURL) does not answer: %w", err)
	}
	if nodeID == "" {
		if nodeID, err = a.nodeID(id.PeerID); err != nil {
			return err
		}
	}
	a.nodeIDs = append(a.nodeIDs, nodeID)
	if _, err := a.svc.RegisterNode(ctx, domain.Meta{Actor: "system:node:" + nodeID}, nodeID, id.PeerID, id.Addrs, a.cfg.Kubo.Capacity); err != nil {
		return fmt.Errorf("register node %s: %w", nodeID, err)
	}
	// The worker reads and reports over its own connection: its start-up scan of the node's placements can take
	// seconds on a large log, and would stall every other request on the shared one meanwhile.
	nc, err := a.nats.Connect("anchorage-worker-" + nodeID)
	if err != nil {
		return err
	}
	wlog, err := a.elog.Fork(ctx, nc)
	if err != nil {
		nc.Close()
		return err
	}
	a.wg.Go(func() { <-a.ctx.Done(); a.workersDone.Wait(); wlog.Close() })
	w := projections.NewWorker(wlog, kc, projections.WorkerConfig{
		NodeID: nodeID, Concurrency: a.cfg.Kubo.Concurrency, PinTimeout: a.cfg.Kubo.PinTimeout.D(),
		SlowAfter: a.cfg.Kubo.SlowAfter.D(), SlowLimit: a.cfg.Kubo.SlowLimit,
		Unavailable: kubo.IsUnavailable, Logger: a.log, Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"node": nodeID}, a.reg),
		Snapshots: fileSnapshots{dir: filepath.Join(a.cfg.DataDir, "worker")},
	})
	a.workers = append(a.workers, w)
	a.workersDone.Add(1)
	a.wg.Go(func() {
		defer a.workersDone.Done()
		for a.ctx.Err() == nil {
			if err := w.Run(a.ctx); err != nil && a.ctx.Err() == nil {
				a.log.Error("node worker stopped; restarting", "node", nodeID, "err", err)
				sleepCtx(a.ctx, time.Second)
			}
		}
	})
	a.wg.Go(func() {
		a.presence.Keep(a.ctx, presenceEvery, func() natsjs.NodeStatus {
			sctx, cancel := context.WithTimeout(a.ctx, 2*time.Second)
			defer cancel()
			used, maxBytes, _ := kc.RepoStat(sctx)
			free := uint64(0)
			if maxBytes > used {
				free = maxBytes - used
			}
			return natsjs.NodeStatus{NodeID: nodeID, FreeBytes: free, UsedBytes: used, Pins: w.Placed(), Version: version}
		})
	})
	// Operators re-drive the node's pins through Kubo (after a lost repo) with `anchorage replay node`.
	sub, err := a.elog.Conn().Subscribe(replaySubject(nodeID), func(m *nats.Msg) {
		a.wg.Go(func() {
			a.log.Info("replaying the node's placements through Kubo", "node", nodeID)
			st, err := w.Replay(a.ctx)
			body := map[string]any{"node": nodeID, "stats": st}
			if err != nil {
				body["error"] = err.Error()
			}
			b, _ := json.Marshal(body)
			_ = m.Respond(b)
			a.log.Info("node replay done", "node", nodeID, "placements", st.Placements, "pinned", st.Pinned, "failed", st.Failed)
		})
	})
	if err != nil {
		return err
	}
	a.wg.Go(func() { <-a.ctx.Done(); _ = sub.Unsubscribe() })
	a.log.Info("storage node started", "node", nodeID, "peer", id.PeerID, "addrs", strings.Join(id.Addrs, " "))
	return nil
}

// replaySubject is where a node listens for replay requests (core NATS: a request, not an event).
func replaySubject(nodeID string) string { return "anchorage.node." + nodeID + ".replay" }

// nodeID is kubo.nodeID, or the id derived at this data dir's first start from its Kubo's peer id.
func (a *app) nodeID(peerID string) (string, error) {
	if a.cfg.Kubo.NodeID != "" {
		return a.cfg.Kubo.NodeID, nil
	}
	path := filepath.Join(a.cfg.DataDir, "node-id")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	id := "node-" + strings.ToLower(peerID[max(0, len(peerID)-8):])
	if !domain.ValidNodeID(id) {
		return "", fmt.Errorf("cannot derive a node id from peer id %q; set kubo.nodeID", peerID)
	}
	return id, os.WriteFile(path, []byte(id+"\n"), 0o644)
}

// startScheduler makes this process a scheduler candidate; the leader lease decides which one acts.
func (a *app) startScheduler(ctx context.Context, id string) error {
	leases, err := natsjs.OpenLeases(ctx, a.elog.JetStream(), leaseBucket, 1)
	if err != nil {
		return err
	}
	leases.SetLogger(a.log)
	wake := make(chan struct{}, 1)
	marks := a.runner.Watermarks()
	a.wg.Go(func() {
		for {
			select {
			case <-a.ctx.Done():
				return
			case <-marks.Changed(postgres.ProjectionPins):
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}
	})
	s := projections.NewScheduler(postgres.NewSchedulerStore(a.owner), a.elog, natsjs.Campaigner{Leases: leases}, a.presence,
		projections.SchedulerConfig{
			ID: id, Replication: a.cfg.Kubo.Replication, Logger: a.log, Registerer: a.reg, Wake: wake,
			Projected: func() uint64 { return marks.Applied(postgres.ProjectionPins) },
		})
	a.wg.Go(func() { s.Run(a.ctx) })
	a.wg.Go(a.maintenanceWatchdog)
	return nil
}

// maintenanceWatchdog exposes how long placement has been paused, and warns once it exceeds the configured limit.
func (a *app) maintenanceWatchdog() {
	store := postgres.NewSchedulerStore(a.owner)
	f := promauto.With(a.reg)
	on := f.NewGauge(prometheus.GaugeOpts{Name: "anchorage_scheduler_maintenance", Help: "1 while placement is paused (maintenance mode)."})
	secs := f.NewGauge(prometheus.GaugeOpts{Name: "anchorage_scheduler_maintenance_seconds", Help: "How long maintenance mode has been on."})
	overdue := f.NewGauge(prometheus.GaugeOpts{Name: "anchorage_scheduler_maintenance_overdue", Help: "1 when maintenance mode has been on longer than kubo.maintenanceAlertAfter."})
	limit := a.cfg.Kubo.MaintenanceAlertAfter.D()
	warned := false
	for {
		st, err := store.SchedState(a.ctx)
		if err == nil {
			on.Set(b2f(st.Maintenance))
			d := time.Duration(0)
			if st.Maintenance && !st.Since.IsZero() {
				d = time.Since(st.Since)
			}
			secs.Set(d.Seconds())
			late := st.Maintenance && limit > 0 && d > limit
			overdue.Set(b2f(late))
			if late && !warned {
				a.log.Warn("maintenance mode has been on longer than kubo.maintenanceAlertAfter: pins are not being placed",
					"since", st.Since, "for", d.Round(time.Second).String(), "limit", limit.String(), "note", st.Note)
			}
			warned = late
		}
		if !sleepCtx(a.ctx, 15*time.Second) {
			return
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
