package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/natsjs"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// seed appends count pin requests for the dev org straight into the node's event log (pipelined, the way an
// import would), each placed on the pseudo-node "seed" and about 85% of them followed by a status observation
// (80% pinned, 5% failed), then waits until the pins projection has applied them all. It reports both rates:
// that is the incremental projector's throughput under a backlog. With queued, it appends the requests alone
// (left queued, with placement paused): the state of issue 2, one event subject per pin instead of two.
func (n *node) seed(count int, queued bool) error {
	ctx := context.Background()
	log, closeLog, err := n.openLog(ctx)
	if err != nil {
		return err
	}
	defer closeLog()
	org := domain.OrgIDForSlug("dev")
	// The placements carry the scheduler's current term: every reader ignores a placement of a term older than
	// the last one started (the fence against deposed schedulers), so term-0 placements would be no-ops and the
	// pins would all stay queued.
	term := uint64(0)
	if last, ok, err := log.LoadLast(ctx, events.SchedTerm); err != nil {
		return err
	} else if ok {
		ts, isTerm := last.Event.(events.SchedTermStarted)
		if !isTerm {
			return fmt.Errorf("seed: last event on %s is %s", events.SchedTerm, last.Type)
		}
		term = ts.Term
	}
	base := time.Now().Add(-time.Duration(count+1000) * time.Millisecond).Truncate(time.Millisecond)
	start := time.Now()
	const chunk = 2000
	total := 0
	env := func(e events.Event) (events.Envelope, error) {
		return events.New(uuid.NewString(), time.Now(), "system:load", "seed", e)
	}
	for lo := 0; lo < count; lo += chunk {
		hi := min(lo+chunk, count)
		// Requests and their placements on the pseudo-node "seed" (nothing fetches these random CIDs), then the
		// statuses observed for those placements.
		var reqs []domain.Message
		var ids []string
		for i := lo; i < hi; i++ {
			id := uuid.Must(uuid.NewV7()).String()
			cid := randomCID()
			req, err := env(events.PinRequested{OrgID: org, RequestID: id, CID: cid, Name: "seed-" + strconv.Itoa(i),
				Meta: map[string]string{"w": strconv.Itoa(i % 16)}, Created: base.Add(time.Duration(i) * time.Millisecond)})
			if err != nil {
				return err
			}
			placed, err := env(events.PinPlaced{OrgID: org, RequestID: id, NodeID: "seed", CID: cid, Term: term})
			if err != nil {
				return err
			}
			reqs = append(reqs, domain.Message{Subject: events.PinSubject(org, id), Expect: 0, Envelope: req})
			if !queued {
				reqs = append(reqs, domain.Message{Subject: events.PlaceSubject("seed", org, id), Expect: 0, Envelope: placed})
			}
			ids = append(ids, id)
		}
		seqs, err := log.AppendBulk(ctx, reqs)
		if err != nil {
			return err
		}
		var obs []domain.Message
		for k, id := range ids {
			if queued {
				break
			}
			status := ""
			switch r := (lo + k) % 20; {
			case r < 16:
				status = "pinned"
			case r == 16:
				status = "failed"
			case r == 17:
				status = "pinning"
			}
			if status == "" {
				continue // stays queued
			}
			placedSeq := seqs[2*k+1]
			o, err := env(events.PinStatusObserved{OrgID: org, RequestID: id, NodeID: "seed", Status: status, PlacedSeq: placedSeq})
			if err != nil {
				return err
			}
			obs = append(obs, domain.Message{Subject: events.PlaceSubject("seed", org, id), Expect: placedSeq, Envelope: o})
		}
		if _, err := log.AppendBulk(ctx, obs); err != nil {
			return err
		}
		total += len(reqs) + len(obs)
		if lo > 0 && lo%200000 == 0 {
			fmt.Printf("  seeded %d pins (%d events) in %s\n", lo, total, time.Since(start).Round(time.Millisecond))
		}
	}
	events_ := total
	appended := time.Since(start)
	last, err := log.LastSeq(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("seed: appended %d events (%d pins) in %s (%.0f events/s)\n", events_, count, appended.Round(time.Millisecond), float64(events_)/appended.Seconds())
	// The live projections work off what is left: their rate on a backlog is the incremental projector's
	// throughput (the appends above may have been the slower side meanwhile).
	tail := map[string]*catchUp{}
	for _, p := range []string{"pins", "audit"} {
		tail[p] = &catchUp{}
	}
	for {
		done := true
		for p, c := range tail {
			cp, err := n.gauge(fmt.Sprintf(`anchorage_projection_checkpoint{projection=%q}`, p))
			if err != nil {
				return err
			}
			c.observe(uint64(cp), last)
			done = done && c.caughtUp()
		}
		if done {
			break
		}
		if time.Since(start) > 30*time.Minute {
			return errors.New("seed: projections did not catch up in 30 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(start)
	fmt.Printf("seed: projected in %s after the first append (%.0f events/s end to end)\n", took.Round(time.Millisecond), float64(events_)/took.Seconds())
	rate := math.Inf(1)
	for _, p := range []string{"pins", "audit"} {
		c := tail[p]
		fmt.Printf("  incremental projector %-5s %s\n", p+":", c)
		if r, ok := c.rate(); ok {
			rate = min(rate, r)
		}
	}
	if math.IsInf(rate, 1) {
		// No backlog left when the appends ended: the projectors kept up with them.
		rate = float64(events_) / took.Seconds()
	}
	incrementalRate = rate
	return nil
}

// incrementalRate is the live projectors' rate measured by the last seed (events/s), for the recovery summary.
var incrementalRate float64

// catchUp follows a projection's checkpoint from the end of the appends until it reaches the head.
type catchUp struct {
	t0, t1   time.Time
	cp0, cp1 uint64
	head     uint64
}

func (c *catchUp) observe(cp, head uint64) {
	now := time.Now()
	if c.t0.IsZero() {
		c.t0, c.cp0, c.head = now, cp, head
	}
	if c.t1.IsZero() && cp >= head {
		c.t1, c.cp1 = now, cp
	}
}

func (c *catchUp) caughtUp() bool { return !c.t1.IsZero() }

// rate is the projection's rate over its backlog, when it had one worth measuring.
func (c *catchUp) rate() (float64, bool) {
	if c.cp1-c.cp0 < 20000 {
		return 0, false
	}
	return float64(c.cp1-c.cp0) / c.t1.Sub(c.t0).Seconds(), true
}

func (c *catchUp) String() string {
	if r, ok := c.rate(); ok {
		return fmt.Sprintf("%d events behind when the appends ended, worked off in %s: %.0f events/s", c.head-c.cp0, c.t1.Sub(c.t0).Round(time.Millisecond), r)
	}
	return fmt.Sprintf("kept up with the appends (%d events behind when they ended)", c.head-c.cp0)
}

// openLog connects to the node's event log over its NATS listener, as the admin CLI does.
func (n *node) openLog(ctx context.Context) (*natsjs.EventLog, func(), error) {
	url, err := os.ReadFile(filepath.Join(n.dir, "nats", "client-url"))
	if err != nil {
		return nil, nil, err
	}
	creds, err := os.ReadFile(filepath.Join(n.dir, "nats", "credentials"))
	if err != nil {
		return nil, nil, err
	}
	user, pass, _ := strings.Cut(strings.TrimSpace(string(creds)), ":")
	nc, err := nats.Connect(strings.TrimSpace(string(url)), nats.UserInfo(user, pass))
	if err != nil {
		return nil, nil, err
	}
	log, err := natsjs.OpenRemoteLog(ctx, nc, natsjs.LogConfig{})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return log, nc.Close, nil
}

// gauge reads one sample from /metrics.
func (n *node) gauge(series string) (float64, error) {
	resp, err := n.client.Get(n.endpoint + "/metrics")
	if err != nil {
		return 0, err
	}
	defer closeBody(resp)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(rest, 64)
		}
	}
	return math.NaN(), fmt.Errorf("%s not in /metrics", series)
}
