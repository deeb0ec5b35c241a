package httpapi

import (
	"bytes"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/anchorage-pin/anchorage/domain"
	"github.com/anchorage-pin/anchorage/projections"
)

// List query limits (the spec's).
const (
	MaxListCIDs  = 10
	DefaultLimit = 10
	MaxLimit     = 1000
)

// StatusAny is the status filter extension meaning every status.
const StatusAny = "any"

// ParseListQuery turns a GET /pins query into a filter for orgID. Errors are domain.ErrInvalid with details
// saying what to fix. Unknown parameters are ignored. See the package documentation for the defaults.
func ParseListQuery(orgID string, q url.Values) (projections.PinFilter, error) {
	f := projections.PinFilter{OrgID: orgID, Match: projections.MatchExact, Limit: DefaultLimit}

	// cid: comma-separated and/or repeated; matched by multihash.
	cids := listParam(q["cid"])
	if len(cids) > MaxListCIDs {
		return f, domain.Errorf(domain.ErrInvalid, "cid lists %d CIDs; at most %d are allowed per request (split the query)", len(cids), MaxListCIDs)
	}
	for _, c := range cids {
		pc, err := domain.ParseCID(c)
		if err != nil {
			return f, domain.Errorf(domain.ErrInvalid, "cid filter: %s", errMsg(err))
		}
		dup := false
		for _, k := range f.CIDKeys {
			if bytes.Equal(k, pc.Key) {
				dup = true
				break
			}
		}
		if !dup {
			f.CIDKeys = append(f.CIDKeys, pc.Key)
		}
	}

	name, err := single(q, "name")
	if err != nil {
		return f, err
	}
	if err := domain.ValidateName(name); err != nil {
		return f, domain.Errorf(domain.ErrInvalid, "name filter: %s", errMsg(err))
	}
	f.Name = name

	match, err := single(q, "match")
	if err != nil {
		return f, err
	}
	if match != "" {
		switch m := projections.Match(strings.ToLower(match)); m {
		case projections.MatchExact, projections.MatchIExact, projections.MatchPartial, projections.MatchIPartial:
			f.Match = m
		default:
			return f, domain.Errorf(domain.ErrInvalid, "match %q is not a text matching strategy; use exact, iexact, partial or ipartial", clip(match))
		}
	}

	statuses := listParam(q["status"])
	seen := make([]bool, len(projections.AllStatuses))
	for _, s := range statuses {
		if strings.EqualFold(s, StatusAny) {
			for i := range seen {
				seen[i] = true
			}
			continue
		}
		st, ok := projections.ParseStatus(strings.ToLower(s))
		if !ok {
			return f, domain.Errorf(domain.ErrInvalid, "status %q is unknown; use queued, pinning, pinned, failed (comma-separated) or any", clip(s))
		}
		seen[st] = true
	}
	for _, st := range projections.AllStatuses {
		if seen[st] {
			f.Statuses = append(f.Statuses, st)
		}
	}
	if len(f.Statuses) == 0 {
		// pinning-api.md §10.1: only pinned by default, every status when looking up by cid or name.
		if len(f.CIDKeys) > 0 || f.Name != "" {
			f.Statuses = append(f.Statuses, projections.AllStatuses...)
		} else {
			f.Statuses = []projections.Status{projections.StatusPinned}
		}
	}

	for _, b := range []struct {
		name string
		dst  *time.Time
	}{{"before", &f.Before}, {"after", &f.After}} {
		v, err := single(q, b.name)
		if err != nil {
			return f, err
		}
		if v == "" {
			continue
		}
		t, err := ParseTimestamp(v)
		if err != nil {
			return f, domain.Errorf(domain.ErrInvalid, "%s %q is not an RFC 3339 timestamp (e.g. 2026-01-02T15:04:05.000Z or 2026-01-02T16:04:05+01:00)", b.name, clip(v))
		}
		// created has millisecond precision, so created < before ⇔ created < before rounded up to the
		// millisecond, and created > after ⇔ created > after truncated to it. Normalising here keeps a
		// sub-millisecond bound exact whatever precision the read model's storage has.
		ms := t.Truncate(time.Millisecond)
		if b.name == "before" && !ms.Equal(t) {
			ms = ms.Add(time.Millisecond)
		}
		if ms.IsZero() && b.name == "before" {
			// The zero time means "unbounded" to the reader; before=0001-01-01T00:00:00Z still bounds.
			ms = ms.Add(time.Millisecond)
		}
		*b.dst = ms
	}

	limit, err := single(q, "limit")
	if err != nil {
		return f, err
	}
	if limit != "" {
		n, err := strconv.Atoi(strings.TrimSpace(limit))
		if err != nil || n < 1 || n > MaxLimit {
			return f, domain.Errorf(domain.ErrInvalid, "limit %q is invalid; it must be an integer from 1 to %d (default %d)", clip(limit), MaxLimit, DefaultLimit)
		}
		f.Limit = n
	}

	meta, err := single(q, "meta")
	if err != nil {
		return f, err
	}
	if strings.TrimSpace(meta) != "" {
		m, err := parseMetaObject("meta filter", []byte(meta))
		if err != nil {
			return f, err
		}
		f.Meta = m
	}
	return f, nil
}

// listParam flattens a parameter given comma-separated and/or repeated, dropping empty entries.
func listParam(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// single returns a parameter that may be given once (repeating the same value is tolerated).
func single(q url.Values, name string) (string, error) {
	vals := q[name]
	if len(vals) == 0 {
		return "", nil
	}
	for _, v := range vals[1:] {
		if v != vals[0] {
			return "", domain.Errorf(domain.ErrInvalid, "%s is given %d times with different values; give it once", name, len(vals))
		}
	}
	return vals[0], nil
}

func errMsg(err error) string {
	if de, ok := err.(*domain.Error); ok { //nolint:errorlint // domain validators return *domain.Error unwrapped
		return de.Msg
	}
	return err.Error()
}

// ParseTimestamp parses an RFC 3339 timestamp leniently: 0 to 9 fractional digits, Z or a numeric offset,
// lower-case t/z, a space instead of T, and a space where a '+' of the offset arrived unencoded.
func ParseTimestamp(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if len(s) > 64 {
		return time.Time{}, domain.Errorf(domain.ErrInvalid, "timestamp too long")
	}
	b := []byte(strings.ToUpper(s))
	if len(b) > 10 && b[10] == ' ' {
		b[10] = 'T'
	}
	// Any space left is a '+' of the offset that arrived unencoded.
	for i := range b {
		if b[i] == ' ' {
			b[i] = '+'
		}
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return time.Time{}, domain.Errorf(domain.ErrInvalid, "invalid timestamp: %v", err)
	}
	return t.UTC(), nil
}
