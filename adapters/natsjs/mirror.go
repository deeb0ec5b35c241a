package natsjs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/anchorage-pin/anchorage/events"
	"github.com/nats-io/nats.go/jetstream"
)

// Disaster recovery: a standby server keeps a mirror of the event stream, fed across a leafnode connection
// from the primary's JetStream domain. A mirror stores every message with the primary's sequence and
// timestamp, so after promotion the log is the primary's log up to the mirror's lag, and read-model
// checkpoints stay valid against it (docs/backup.md).

// MirrorStatus describes a standby's mirror.
type MirrorStatus struct {
	LastSeq uint64 // last sequence stored on the standby
	Lag     uint64 // messages the primary has that the mirror has not stored yet, as last reported
	// Idle is how long ago the mirror last heard from the primary (-1: never).
	Idle time.Duration
	// Error is the server's error for the mirror's replication ("" when healthy).
	Error string
}

// EnsureMirror creates the mirror of the primary's event stream on a standby (js: the standby's JetStream),
// or checks that the existing stream is that mirror. primaryDomain is the primary's nats.domain.
func EnsureMirror(ctx context.Context, js jetstream.JetStream, primaryDomain string) (jetstream.Stream, error) {
	if primaryDomain == "" {
		return nil, errors.New("natsjs: the primary's JetStream domain is required (its nats.domain)")
	}
	want := StreamConfig(1)
	want.Subjects, want.AllowAtomicPublish = nil, false // a mirror has neither
	want.Mirror = &jetstream.StreamSource{Name: events.StreamName, External: &jetstream.ExternalStream{APIPrefix: "$JS." + primaryDomain + ".API"}}
	st, err := js.Stream(ctx, events.StreamName)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		st, err = js.CreateStream(ctx, want)
		if err != nil {
			return nil, fmt.Errorf("natsjs: create mirror: %w", err)
		}
		return st, nil
	case err != nil:
		return nil, fmt.Errorf("natsjs: stream: %w", err)
	}
	have := st.CachedInfo().Config
	if have.Mirror == nil {
		return nil, fmt.Errorf("natsjs: this store already holds a stream %s that is not a mirror (a promoted standby or a primary's store); use an empty store dir for a new standby", events.StreamName)
	}
	if have.Mirror.Name != events.StreamName || have.Mirror.External == nil || have.Mirror.External.APIPrefix != want.Mirror.External.APIPrefix {
		return nil, fmt.Errorf("natsjs: the mirror here follows another source (%s via %v), not domain %q; use an empty store dir", have.Mirror.Name, have.Mirror.External, primaryDomain)
	}
	return st, nil
}

// MirrorInfo reports a standby mirror's state.
func MirrorInfo(ctx context.Context, st jetstream.Stream) (MirrorStatus, error) {
	info, err := st.Info(ctx)
	if err != nil {
		return MirrorStatus{}, err
	}
	out := MirrorStatus{LastSeq: info.State.LastSeq, Idle: -1}
	if m := info.Mirror; m != nil {
		out.Lag, out.Idle = m.Lag, m.Active
		if m.Error != nil {
			out.Error = m.Error.Error()
		}
	}
	return out, nil
}

// PromoteMirror turns the standby's mirror into the event stream: it stops following the primary and takes
// appends, continuing at the next sequence. Afterwards anchorage can open the store as its own. Promoting a
// stream that is already the event stream does nothing.
func PromoteMirror(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return 0, fmt.Errorf("natsjs: no %s stream in this store: %w", events.StreamName, err)
	}
	cfg := st.CachedInfo().Config
	if cfg.Mirror == nil && slices.Equal(cfg.Subjects, events.StreamSubjects) {
		return st.CachedInfo().State.LastSeq, nil
	}
	cfg.Mirror, cfg.Subjects, cfg.AllowAtomicPublish = nil, events.StreamSubjects, true
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return 0, fmt.Errorf("natsjs: promote: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}
