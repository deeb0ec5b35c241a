package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/anchorage-pin/anchorage/adapters/postgres/internal/dbsqlc"
	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/events"
	"github.com/anchorage-pin/anchorage/projections"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ProjectionAudit is the audit projection's name (and checkpoint).
const ProjectionAudit = "audit"

// The audit trail is a read model like the others: `anchorage replay projections` rebuilds it from the log and
// `replay verify` compares it row by row, and a start on a damaged log checks its checkpoint too (it is the one
// that sees every event).
func init() { ProjectionTables[ProjectionAudit] = []string{"audit_events"} }

// AuditProjector keeps audit_events: one row per event of the log, inserted once and never changed.
//
// It is on the path of every event, so a batch costs one statement besides the checkpoint compare-and-set, in
// the same pipeline (one round trip): an INSERT … SELECT unnest(…) ON CONFLICT (seq) DO NOTHING. It never fails
// on an event's content: ids that are not UUIDs and CIDs that do not parse are recorded as NULL, and a payload
// jsonb cannot hold is recorded with the offending characters replaced; a stalled audit projection would make
// the node unready.
//
// Each row also carries the time index (at_max, at_lag; see migrations/000003_audit.up.sql), which depends on
// every earlier event: the projector keeps its running values in memory while its batches keep committing, and
// reads them back at its checkpoint otherwise, so any batching and any replay give exactly the same rows.
type AuditProjector struct {
	pool     *pgxpool.Pool
	grow     *growthAnalyzer // nil: none
	coalesce time.Duration
	mu       sync.Mutex
	clock    *auditClock // running time-index values at clock.pos; nil: read them back
	last     time.Time   // when the last batch committed
	load     *bulkLoad   // a rebuild's load transaction (BeginBulk); nil: none
}

// bulkLoad is a rebuild's load of a fresh copy in one transaction: see BeginBulk.
type bulkLoad struct {
	conn *pgxpool.Conn
	tx   pgx.Tx
}

// AuditCoalesce is how long the audit projector lets small batches gather before it applies the next one (see
// NewAuditProjector). The audit trail is then up to this much behind the pins list.
const AuditCoalesce = 100 * time.Millisecond

// auditBigBatch is a batch large enough that its fixed cost no longer matters: it is applied at once.
const auditBigBatch = 256

type auditClock struct {
	pos    uint64
	found  bool      // any event at or before pos
	atMax  time.Time // microseconds
	maxLag time.Duration
}

// NewAuditProjector returns the audit projector. It applies a small batch (under 256 events) only once
// AuditCoalesce has passed since its previous one, letting the log's reader gather the events that arrive
// meanwhile: a batch has a fixed cost (a transaction, a round trip) several times that of an event, and at a
// steady rate of small batches that cost would compete for the database and the CPU with the pins projection,
// which every write's read-your-writes waits for.
func NewAuditProjector(pool *pgxpool.Pool) *AuditProjector {
	return &AuditProjector{pool: pool, coalesce: AuditCoalesce}
}

// WithCoalesce sets how long small batches gather (0: apply every batch at once).
func (p *AuditProjector) WithCoalesce(d time.Duration) *AuditProjector {
	p.coalesce = d
	return p
}

func (p *AuditProjector) Name() string { return ProjectionAudit }

// Filters are every subject space that carries events (users.> is reserved and carries none).
func (p *AuditProjector) Filters() []string {
	return []string{events.AllOrgs, events.AllPins, events.AllTokens, events.AllPlace, events.AllNodes, events.AllSched}
}

func (p *AuditProjector) Checkpoint(ctx context.Context) (uint64, error) {
	return checkpoint(ctx, p.pool, ProjectionAudit)
}

func (p *AuditProjector) Apply(ctx context.Context, prev uint64, recs []events.Record) error {
	if len(recs) == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if wait := p.coalesce - time.Since(p.last); wait > 0 && len(recs) < auditBigBatch {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	if err := p.readClock(ctx, prev); err != nil {
		return err
	}
	next := *p.clock
	prm := auditRows(recs, &next).text()
	err := applyBatch(ctx, p.pool, ProjectionAudit, prev, recs, func(db dbsqlc.DBTX) error {
		return queries.AuditInsert(ctx, db, prm)
	})
	if err != nil {
		p.clock = nil
		return err
	}
	next.pos = recs[len(recs)-1].Seq
	p.clock = &next
	p.last = time.Now()
	p.grow.wrote("audit_events", len(recs))
	return nil
}

// ApplyBulk is Apply for a rebuild: the same rows, loaded with COPY (in one transaction with the checkpoint
// compare-and-set) into the fresh shadow table, which has neither row-level security nor secondary indexes
// while it is filled and cannot hold any of the rows yet. No coalescing: rebuild batches are large.
func (p *AuditProjector) ApplyBulk(ctx context.Context, prev uint64, recs []events.Record) error {
	if len(recs) == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.readClock(ctx, prev); err != nil {
		return err
	}
	next := *p.clock
	data := auditCopyData(auditRows(recs, &next))
	copySQL := auditCopySQL
	if p.load != nil {
		copySQL = auditCopyFreezeSQL
	}
	load := func(tx pgx.Tx) error {
		if err := queries.CheckpointAdvanceOrFail(ctx, tx, dbsqlc.CheckpointAdvanceOrFailParams{Name: ProjectionAudit, Prev: int64(prev), Next: int64(recs[len(recs)-1].Seq)}); err != nil {
			return err
		}
		tag, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(data), copySQL)
		if err == nil && tag.RowsAffected() != int64(len(recs)) {
			err = fmt.Errorf("audit COPY stored %d rows of %d", tag.RowsAffected(), len(recs))
		}
		return err
	}
	var err error
	if p.load != nil {
		err = load(p.load.tx) // a failure aborts the load's transaction: EndBulk rolls it back
	} else {
		err = pgx.BeginFunc(ctx, p.pool, load)
	}
	if err != nil {
		p.clock = nil
		return batchErr(err)
	}
	next.pos = recs[len(recs)-1].Seq
	p.clock = &next
	p.last = time.Now()
	return nil
}

// BeginBulk starts a rebuild's load of the fresh, empty copy of the audit trail in schema: one transaction,
// opened by emptying the copy with TRUNCATE, holds every ApplyBulk until EndBulk. With wal_level = minimal (the
// managed PostgreSQL's), rows loaded into a table truncated (or created) in the same transaction are not
// written to the WAL: the table's files are synced at commit instead. The audit trail's copy is about 500 MB
// of WAL per million events otherwise, four fifths of a rebuild's. Under any other wal_level the load is
// simply one transaction.
func (p *AuditProjector) BeginBulk(ctx context.Context, schema string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.load != nil {
		return errors.New("audit: a bulk load is already open")
	}
	if schema == "" || schema == "public" {
		return fmt.Errorf("audit: a bulk load empties its table, and %q is not a rebuild's schema", schema)
	}
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return interpret(err)
	}
	fastUUIDs(conn.Conn().TypeMap())
	tx, err := conn.Begin(ctx)
	if err != nil {
		conn.Release()
		return interpret(err)
	}
	if _, err := tx.Exec(ctx, "TRUNCATE "+pgx.Identifier{schema, "audit_events"}.Sanitize()); err != nil {
		_ = tx.Rollback(ctx)
		conn.Release()
		return interpret(err)
	}
	p.load, p.clock = &bulkLoad{conn: conn, tx: tx}, nil
	return nil
}

// EndBulk ends BeginBulk's load: commits it, or rolls it back when commit is false.
func (p *AuditProjector) EndBulk(ctx context.Context, commit bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.load
	if l == nil {
		return nil
	}
	p.load, p.clock = nil, nil
	defer l.conn.Release()
	if !commit {
		return interpret(l.tx.Rollback(context.WithoutCancel(ctx)))
	}
	return interpret(l.tx.Commit(ctx))
}

// readClock makes sure p.clock holds the time index's running values at prev.
func (p *AuditProjector) readClock(ctx context.Context, prev uint64) error {
	if p.clock != nil && p.clock.pos == prev {
		return nil
	}
	var db dbsqlc.DBTX = p.pool
	if p.load != nil {
		db = p.load.tx // the rows loaded so far are visible only in the load's transaction
	}
	row, err := queries.AuditClockAt(ctx, db, int64(prev))
	if err != nil {
		p.clock = nil
		return interpret(err)
	}
	p.clock = &auditClock{pos: prev, found: row.Found, atMax: time.UnixMicro(row.AtMaxUs).UTC(), maxLag: time.Duration(row.MaxLagUs) * time.Microsecond}
	return nil
}

var auditCopyColumns = []string{"seq", "at", "subject", "type", "version", "actor", "corr", "org_id", "request_id", "cid_key", "data", "at_max", "at_lag"}

// auditCopySQL loads AuditInsert's rows, with its conversions (empty values are NULL), in COPY's binary format
// as auditCopyData writes it.
var auditCopySQL = "COPY audit_events (" + strings.Join(auditCopyColumns, ", ") + ") FROM STDIN (FORMAT binary)"

// auditCopyFreezeSQL is auditCopySQL for a bulk load (BeginBulk), whose transaction truncated the table: its
// rows are written frozen and its pages marked all-visible, so autovacuum finds nothing to do on the trail a
// rebuild swaps in (it would otherwise read all of it soon after, and again to freeze it), and index-only
// scans work at once.
var auditCopyFreezeSQL = strings.Replace(auditCopySQL, "(FORMAT binary)", "(FORMAT binary, FREEZE)", 1)

// auditCopyData encodes rows in COPY's binary format for auditCopySQL. Written by hand: every column's type is
// fixed, and pgx's generic encoding (a type lookup and an interface conversion per value) was an eighth of a
// rebuild's client CPU.
func auditCopyData(r auditParams) []byte {
	n := len(r.Seqs)
	size := 21 // header and trailer
	for i := range n {
		// Per row: its field count, 13 lengths, the fixed-size values (8+8+4+16+16+8+16) and the variable ones.
		size += 2 + 13*4 + 76 + len(r.Subjects[i]) + len(r.Types[i]) + len(r.Actors[i]) + len(r.Corrs[i]) + len(r.CidKeys[i]) + len(r.Datas[i])
	}
	b := make([]byte, 0, size) // exact or a little over: no growing and copying as it fills
	b = append(b, "PGCOPY\n\xff\r\n\x00"...)
	b = binary.BigEndian.AppendUint32(b, 0) // flags
	b = binary.BigEndian.AppendUint32(b, 0) // header extension
	null := func(b []byte) []byte { return binary.BigEndian.AppendUint32(b, 0xFFFFFFFF) }
	bytesField := func(b, v []byte) []byte {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		return append(b, v...)
	}
	textField := func(b []byte, v string) []byte {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		return append(b, v...)
	}
	int64Field := func(b []byte, v int64) []byte {
		b = binary.BigEndian.AppendUint32(b, 8)
		return binary.BigEndian.AppendUint64(b, uint64(v))
	}
	// timestamptz: microseconds since 2000-01-01 00:00 UTC.
	const pgEpochUs = 946684800 * 1000000
	timeField := func(b []byte, t time.Time) []byte { return int64Field(b, t.UnixMicro()-pgEpochUs) }
	uuidField := func(b []byte, id uuid.UUID) []byte {
		if id == zeroUUID {
			return null(b)
		}
		return bytesField(b, id[:])
	}
	for i := range n {
		b = binary.BigEndian.AppendUint16(b, uint16(len(auditCopyColumns)))
		b = int64Field(b, r.Seqs[i])
		b = timeField(b, r.Ats[i])
		b = textField(b, r.Subjects[i])
		b = textField(b, r.Types[i])
		b = binary.BigEndian.AppendUint32(b, 4)
		b = binary.BigEndian.AppendUint32(b, uint32(r.Versions[i]))
		b = textField(b, r.Actors[i])
		if r.Corrs[i] == "" {
			b = null(b)
		} else {
			b = textField(b, r.Corrs[i])
		}
		b = uuidField(b, r.orgs[i])
		b = uuidField(b, r.reqs[i])
		if len(r.CidKeys[i]) == 0 {
			b = null(b)
		} else {
			b = bytesField(b, r.CidKeys[i])
		}
		b = bytesField(b, r.Datas[i]) // json's binary form is its text
		b = timeField(b, r.AtMaxes[i])
		if r.LagsUs[i] > 0 { // interval: microseconds, days, months
			b = binary.BigEndian.AppendUint32(b, 16)
			b = binary.BigEndian.AppendUint64(b, uint64(r.LagsUs[i]))
			b = binary.BigEndian.AppendUint64(b, 0)
		} else {
			b = null(b)
		}
	}
	return binary.BigEndian.AppendUint16(b, 0xFFFF) // trailer
}

var zeroUUID uuid.UUID

// auditParams are a batch's rows: AuditInsert's columns, with the ids as UUIDs (text() fills AuditInsert's).
type auditParams struct {
	dbsqlc.AuditInsertParams
	orgs, reqs []uuid.UUID // zero: NULL
}

// text returns AuditInsert's parameters, the ids as text (empty: NULL).
func (a auditParams) text() dbsqlc.AuditInsertParams {
	prm := a.AuditInsertParams
	prm.OrgIds, prm.RequestIds = make([]string, len(a.orgs)), make([]string, len(a.reqs))
	for i, o := range a.orgs {
		if o != zeroUUID {
			prm.OrgIds[i] = o.String()
		}
		if r := a.reqs[i]; r != zeroUUID {
			prm.RequestIds[i] = r.String()
		}
	}
	return prm
}

// auditRows turns a batch into the insert's columns, advancing the time index in c.
func auditRows(recs []events.Record, c *auditClock) auditParams {
	n := len(recs)
	prm := auditParams{AuditInsertParams: dbsqlc.AuditInsertParams{
		Seqs: make([]int64, n), Ats: make([]time.Time, n), Subjects: make([]string, n), Types: make([]string, n),
		Versions: make([]int32, n), Actors: make([]string, n), Corrs: make([]string, n),
		CidKeys: make([][]byte, n), Datas: make([][]byte, n),
		AtMaxes: make([]time.Time, n), LagsUs: make([]int64, n),
	}, orgs: make([]uuid.UUID, n), reqs: make([]uuid.UUID, n)}
	keys := map[string][]byte{} // a pin's events repeat its CID: parse it once per batch
	for i, r := range recs {
		at := r.At.UTC().Truncate(time.Microsecond) // PostgreSQL's precision: the index is computed as stored
		if !c.found || at.After(c.atMax) {
			c.atMax, c.found = at, true
		} else if lag := c.atMax.Sub(at); lag > c.maxLag {
			c.maxLag = lag
			prm.LagsUs[i] = lag.Microseconds()
		}
		prm.orgs[i], prm.reqs[i] = subjectIDs(r.Subject)
		prm.Seqs[i] = int64(r.Seq)
		prm.Ats[i] = at
		prm.Subjects[i] = r.Subject
		prm.Types[i] = string(r.Type)
		prm.Versions[i] = int32(r.Version)
		prm.Actors[i] = r.Actor
		prm.Corrs[i] = r.Corr
		prm.CidKeys[i] = cidKeyOf(r.Event, keys)
		prm.Datas[i] = auditData(r)
		prm.AtMaxes[i] = c.atMax
	}
	return prm
}

// subjectIDs returns the org and pin request an event's subject names (zero when it names none, or not as a
// UUID): orgs.<org>, pins.<org>.<request>, tokens.<org>.<token>, place.<node>.<org>.<request>.
func subjectIDs(subject string) (org, request uuid.UUID) {
	kind, rest, _ := strings.Cut(subject, ".")
	var o, r string
	switch kind {
	case "orgs":
		if !strings.Contains(rest, ".") {
			o = rest
		}
	case "tokens", "pins":
		a, b, ok := strings.Cut(rest, ".")
		if ok && !strings.Contains(b, ".") {
			o = a
			if kind == "pins" {
				r = b
			}
		}
	case "place":
		if _, after, ok := strings.Cut(rest, "."); ok {
			a, b, ok := strings.Cut(after, ".")
			if ok && !strings.Contains(b, ".") {
				o, r = a, b
			}
		}
	}
	if id, err := uuid.Parse(o); err == nil {
		org = id
	}
	if id, err := uuid.Parse(r); err == nil && org != zeroUUID {
		request = id
	}
	return org, request
}

// cidKeyOf returns the multihash of the event's CID, or nil when it has none (or one that does not parse),
// remembering it in seen.
func cidKeyOf(e events.Event, seen map[string][]byte) []byte {
	var c string
	switch e := e.(type) {
	case events.PinRequested:
		c = e.CID
	case events.PinPlaced:
		c = e.CID
	case events.PinUnplaced:
		c = e.CID
	case events.PinStatusObserved:
		c = e.CID
	}
	if c == "" {
		return nil
	}
	if k, ok := seen[c]; ok {
		return k
	}
	var key []byte
	if pc, err := domain.ParseCID(c); err == nil {
		key = pc.Key
	}
	seen[c] = key
	return key
}

// auditData is the payload as recorded, made storable as jsonb: jsonb refuses invalid UTF-8 and the \u0000
// escape, which a JSON payload may hold. Those are replaced by U+FFFD; anything else is kept byte for byte.
func auditData(r events.Record) []byte {
	data := []byte(r.Data)
	// Data decoded from the log is valid JSON (the decoder checked it): only records built in memory need the check.
	if len(data) == 0 || (r.Event == nil || data[0] != '{' || data[len(data)-1] != '}') && !json.Valid(data) {
		// Records built in memory (tests, tools) may carry no envelope data: the typed payload is the data.
		if b, err := json.Marshal(r.Event); err == nil && r.Event != nil {
			data = b
		} else {
			data = []byte("null")
		}
	}
	if !utf8.Valid(data) {
		data = []byte(strings.ToValidUTF8(string(data), "\uFFFD"))
	}
	return escapeNUL(data)
}

// escapeNUL replaces every \u0000 escape (one preceded by an even number of backslashes) with \ufffd.
func escapeNUL(b []byte) []byte {
	const esc = `\u0000`
	if !strings.Contains(string(b), esc) {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			out = append(out, b[i])
			continue
		}
		if strings.HasPrefix(string(b[i:]), esc) {
			out = append(out, `\ufffd`...)
			i += len(esc) - 1
			continue
		}
		// Any other escape: copy it whole, so its second character is never taken for a new escape.
		out = append(out, b[i])
		if i+1 < len(b) {
			i++
			out = append(out, b[i])
		}
	}
	return out
}

// AuditReader reads the audit projection. A query of one org runs on the API role's pool, in a read-only
// transaction that sets the org transaction-locally (app.org_id): row-level security then shows that org's rows
// only, never the events of no org. A sysadmin query of every org runs on the owner role's pool, in a read-only
// transaction: it sees every row, the events of no org (nodes, scheduler) included. Operator commands pass the
// owner pool for both.
type AuditReader struct{ api, owner *pgxpool.Pool }

// NewAuditReader returns a reader: org-scoped reads go through api, reads of every org through owner (nil: such
// reads fail).
func NewAuditReader(api, owner *pgxpool.Pool) *AuditReader {
	return &AuditReader{api: api, owner: owner}
}

// customPlans runs every statement of tx with a plan made for its actual arguments (pgx.QueryExecModeDescribeExec:
// an unnamed statement, which PostgreSQL plans when the arguments are bound). Audit queries bound sequence
// ranges with parameters, and a cached generic plan cannot tell a page at the head of the log from the whole
// log: it may then walk the log's primary key and sort. Audit reads are rare; planning each is cheap next to a
// wrong plan.
type customPlans struct{ tx pgx.Tx }

var _ dbsqlc.DBTX = customPlans{}

func exec(args []any) []any { return append([]any{pgx.QueryExecModeDescribeExec}, args...) }

func (c customPlans) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return c.tx.Exec(ctx, sql, exec(args)...)
}

func (c customPlans) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return c.tx.Query(ctx, sql, exec(args)...)
}

func (c customPlans) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return c.tx.QueryRow(ctx, sql, exec(args)...)
}

// tx runs fn in a read-only transaction scoped to org (API role), or seeing every org when org is empty (owner
// role).
func (r *AuditReader) tx(ctx context.Context, org string, fn func(db customPlans) error) error {
	pool := r.api
	if org == "" {
		if pool = r.owner; pool == nil {
			return domain.Errorf(domain.ErrUnavailable, "reading the audit trail of every org is not available on this server")
		}
	} else if _, err := uuid.Parse(org); err != nil {
		return fmt.Errorf("postgres: org id %q is not a uuid", org)
	}
	err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if org != "" {
			if _, err := tx.Exec(ctx, setOrg, org); err != nil {
				return err
			}
		}
		return fn(customPlans{tx})
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		return domain.Errorf(domain.ErrUnavailable, "the audit trail is not there yet: a node of this version must start once to migrate the database")
	}
	return interpret(err)
}

// auditRow is any of the generated audit row types, which all have AuditListAllRow's fields.
type auditRow interface {
	dbsqlc.AuditListAllRow | dbsqlc.AuditListByRequestRow | dbsqlc.AuditListByCIDRow | dbsqlc.AuditListByActorRow |
		dbsqlc.AuditListByTypeRow | dbsqlc.AuditListByOrgRow | dbsqlc.AuditListNoOrgRow | dbsqlc.AuditPinHistoryRow
}

func auditEvents[T auditRow](rows []T, err error) ([]projections.AuditEvent, error) {
	if err != nil {
		return nil, err
	}
	out := make([]projections.AuditEvent, len(rows))
	for i, row := range rows {
		r := dbsqlc.AuditListAllRow(row)
		e := projections.AuditEvent{Seq: uint64(r.Seq), At: r.At.UTC(), Subject: r.Subject, Type: r.Type, Version: int(r.Version),
			Actor: r.Actor, Data: json.RawMessage(r.Data)}
		if r.Corr != nil {
			e.Corr = *r.Corr
		}
		if r.OrgID != nil {
			e.OrgID = r.OrgID.String()
		}
		if r.RequestID != nil {
			e.RequestID = r.RequestID.String()
		}
		out[i] = e
	}
	return out, nil
}

func optional[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// AuditEvents returns the events matching f, newest first, at most f.Limit. The most selective filter drives
// the query (request, CID, actor, type, else the org's whole trail), read newest first from its index from the
// cursor down: O(Limit) rows per org, whatever the trail's length. Time bounds become sequence bounds first.
func (r *AuditReader) AuditEvents(ctx context.Context, f projections.AuditFilter) ([]projections.AuditEvent, error) {
	if f.Limit < 1 {
		return nil, fmt.Errorf("postgres: audit query without a limit")
	}
	if f.OrgID == "" && !f.AllOrgs {
		return nil, fmt.Errorf("postgres: audit query without an org")
	}
	var orgs []uuid.UUID
	if f.OrgID != "" {
		id, err := uuid.Parse(f.OrgID)
		if err != nil {
			return nil, fmt.Errorf("postgres: org id %q is not a uuid", f.OrgID)
		}
		orgs = []uuid.UUID{id}
	}
	var reqID uuid.UUID
	if f.RequestID != "" {
		id, err := uuid.Parse(f.RequestID)
		if err != nil {
			return nil, nil // no event has it
		}
		reqID = id
	}
	since, until := optionalTime(f.Since), optionalTime(f.Until)
	actor, typ := optional(f.Actor), optional(f.Type)
	lim := int32(f.Limit)
	var out []projections.AuditEvent
	err := r.tx(ctx, f.OrgID, func(tx customPlans) error {
		lo, hi := int64(0), int64(1<<63-1)
		if since != nil || until != nil {
			b, err := queries.AuditSeqBounds(ctx, tx, dbsqlc.AuditSeqBoundsParams{Since: since, Until: until})
			if err != nil {
				return err
			}
			lo, hi = b.Lo, b.Hi
		}
		if f.BeforeSeq > 0 && int64(f.BeforeSeq) < hi {
			hi = int64(f.BeforeSeq)
		}
		if lo >= hi {
			return nil
		}
		driven := f.RequestID != "" || f.CIDKey != nil || f.Actor != "" || f.Type != ""
		if f.OrgID == "" {
			if !driven {
				var err error
				out, err = auditEvents(queries.AuditListAll(ctx, tx, dbsqlc.AuditListAllParams{Lo: lo, Hi: hi, Since: since, Until: until, Lim: lim}))
				return err
			}
			var err error
			if orgs, err = queries.AuditOrgIDs(ctx, tx); err != nil {
				return err
			}
		}
		var err error
		switch {
		case f.RequestID != "":
			out, err = auditEvents(queries.AuditListByRequest(ctx, tx, dbsqlc.AuditListByRequestParams{OrgIds: orgs, RequestID: reqID,
				Lo: lo, Hi: hi, Actor: actor, Type: typ, CidKey: f.CIDKey, Since: since, Until: until, Lim: lim}))
		case f.CIDKey != nil:
			out, err = auditEvents(queries.AuditListByCID(ctx, tx, dbsqlc.AuditListByCIDParams{OrgIds: orgs, CidKey: f.CIDKey,
				Lo: lo, Hi: hi, Actor: actor, Type: typ, Since: since, Until: until, Lim: lim}))
		case f.Actor != "":
			out, err = auditEvents(queries.AuditListByActor(ctx, tx, dbsqlc.AuditListByActorParams{OrgIds: orgs, Actor: f.Actor,
				Lo: lo, Hi: hi, Type: typ, Since: since, Until: until, Lim: lim}))
		case f.Type != "":
			out, err = auditEvents(queries.AuditListByType(ctx, tx, dbsqlc.AuditListByTypeParams{OrgIds: orgs, Type: f.Type,
				Lo: lo, Hi: hi, Since: since, Until: until, Lim: lim}))
		default:
			out, err = auditEvents(queries.AuditListByOrg(ctx, tx, dbsqlc.AuditListByOrgParams{OrgIds: orgs,
				Lo: lo, Hi: hi, Since: since, Until: until, Lim: lim}))
		}
		if err != nil || f.OrgID != "" {
			return err
		}
		// Every org: the events of no org too.
		var reqPtr *uuid.UUID
		if f.RequestID != "" {
			reqPtr = &reqID
		}
		none, err := auditEvents(queries.AuditListNoOrg(ctx, tx, dbsqlc.AuditListNoOrgParams{Lo: lo, Hi: hi, Actor: actor, Type: typ,
			RequestID: reqPtr, CidKey: f.CIDKey, Since: since, Until: until, Lim: lim}))
		if err != nil {
			return err
		}
		out = projections.MergeNewestFirst(f.Limit, out, none)
		return nil
	})
	return out, err
}

// PinHistory returns every event of one of org's pin requests, oldest first: its pin events and its placements
// and observations on every node. An unknown request (or another org's) is domain.ErrNotFound.
func (r *AuditReader) PinHistory(ctx context.Context, org, requestID string) ([]projections.AuditEvent, error) {
	orgID, err1 := uuid.Parse(org)
	id, err2 := uuid.Parse(requestID)
	if err1 != nil || err2 != nil {
		return nil, domain.Errorf(domain.ErrNotFound, "pin request %q does not exist", requestID)
	}
	var out []projections.AuditEvent
	err := r.tx(ctx, org, func(tx customPlans) error {
		var err error
		out, err = auditEvents(queries.AuditPinHistory(ctx, tx, dbsqlc.AuditPinHistoryParams{OrgID: orgID, RequestID: id}))
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, domain.Errorf(domain.ErrNotFound, "pin request %s does not exist", requestID)
	}
	return out, nil
}

// PinsAsOf returns org's pin list as it stood at t (newest first), folded from the audit trail by
// projections.AsOf: the org's pin and placement events of the log up to t, with the scheduler terms started
// meanwhile, streamed through the fold (memory holds the pins, not the events).
func (r *AuditReader) PinsAsOf(ctx context.Context, org string, t time.Time) ([]projections.PinView, error) {
	orgID, err := uuid.Parse(org)
	if err != nil {
		return nil, fmt.Errorf("postgres: org id %q is not a uuid", org)
	}
	var pins []projections.PinView
	err = r.tx(ctx, org, func(tx customPlans) error {
		hi, err := queries.AuditSeqAfter(ctx, tx, t)
		if err != nil {
			return err
		}
		terms, err := queries.AuditSchedTerms(ctx, tx, hi)
		if err != nil {
			return err
		}
		fold := projections.NewAsOf(t)
		// Streamed: memory holds the pins, not the events. (A custom plan, as for every audit read: whether the org's
		// index or the log's order is the cheaper way to all of its events depends on the org's share of the log.)
		rows, err := tx.Query(ctx, dbsqlc.AuditPinEventsBefore, orgID, hi)
		if err != nil {
			return err
		}
		defer rows.Close()
		var row dbsqlc.AuditPinEventsBeforeRow
		for rows.Next() {
			if err := rows.Scan(&row.Seq, &row.At, &row.Type, &row.Version, &row.Data); err != nil {
				return err
			}
			for len(terms) > 0 && terms[0].Seq < row.Seq {
				fold.Apply(events.Record{Seq: uint64(terms[0].Seq), Event: events.SchedTermStarted{Term: uint64(terms[0].Term)}})
				terms = terms[1:]
			}
			ev, err := events.Decode(events.Type(row.Type), int(row.Version), row.Data)
			if err != nil {
				continue // recorded by a newer build: this one cannot fold it
			}
			fold.Apply(events.Record{Seq: uint64(row.Seq), Envelope: events.Envelope{Type: events.Type(row.Type), Version: int(row.Version), At: row.At}, Event: ev})
		}
		if err := rows.Err(); err != nil {
			return err
		}
		pins = fold.Pins()
		return nil
	})
	return pins, err
}
