package events

import (
	"encoding/json"
	"time"
	"unicode/utf8"
)

// The fast decoder reads the envelope and the payloads of the hot event types (every pin and placement event)
// in one pass over the message body, without reflection. It is only a shortcut: it handles the documents that
// anchorage itself writes (known keys, spelled exactly, each once; no nulls; integers without fraction or
// exponent) and gives up on anything else, leaving the document to encoding/json (Unmarshal's and Decode's slow
// path). Whenever it succeeds its result is exactly what encoding/json produces (TestFastDecodeMatches and
// FuzzFastDecode compare them).

// UnmarshalOwned is UnmarshalTransient for a body the caller hands over and never changes again (a message
// the NATS client copied out of its read buffer): the payload's raw JSON (Envelope.Data) is then a part of body
// rather than a copy of it, one allocation and copy less per event.
func UnmarshalOwned(body []byte) (Envelope, Event, error) {
	if env, ev, ok := fastUnmarshalSharing(body, shareBody); ok {
		return env, ev, nil
	}
	return slowUnmarshal(body)
}

// sharing says what the result of fastUnmarshal may share.
type sharing uint8

const (
	shareNothing sharing = iota // every string and Data are copies of their own
	shareCopy                   // the strings are substrings of one copy of body (one allocation instead of one per field; the copy lives as long as any of them)
	shareBody                   // shareCopy, and Data is a part of body itself
)

// fastUnmarshal decodes an envelope and its payload; ok is false when the slow path must decode it. With
// shared, every string of the result is a substring of one copy of body (shareCopy).
func fastUnmarshal(body []byte, shared bool) (env Envelope, ev Event, ok bool) {
	if shared {
		return fastUnmarshalSharing(body, shareCopy)
	}
	return fastUnmarshalSharing(body, shareNothing)
}

// fastUnmarshalSharing is fastUnmarshal with what the result may share spelled out.
func fastUnmarshalSharing(body []byte, share sharing) (env Envelope, ev Event, ok bool) {
	s := scanner{b: body}
	if share != shareNothing {
		s.src = string(body)
	}
	if !s.begin('{') {
		return env, nil, false
	}
	var seen uint8
	dataStart, dataEnd := -1, -1
	for more := !s.end('}'); more; {
		key, ok := s.key()
		if !ok {
			return env, nil, false
		}
		var bit uint8
		switch string(key) {
		case "id":
			bit = 1
			env.ID, ok = s.str()
		case "type":
			bit = 2
			var t string
			if t, ok = s.str(); ok {
				env.Type = internType(t)
			}
		case "v":
			bit = 4
			var n int64
			n, ok = s.int(true)
			env.Version = int(n)
		case "at":
			bit = 8
			env.At, ok = s.time()
		case "actor":
			bit = 16
			env.Actor, ok = s.str()
		case "corr":
			bit = 32
			env.Corr, ok = s.str()
		case "data":
			bit = 64
			// The payload is decoded in place, so type and version must come first (as Marshal writes them).
			if seen&6 != 6 {
				return env, nil, false
			}
			dec := fastPayload(env.Type, env.Version)
			if dec == nil {
				return env, nil, false
			}
			s.ws()
			dataStart = s.i
			if ev, ok = dec(&s); ok {
				dataEnd = s.i
			}
		default:
			return env, nil, false
		}
		if !ok || seen&bit != 0 {
			return env, nil, false
		}
		seen |= bit
		if more, ok = s.next('}'); !ok {
			return env, nil, false
		}
	}
	if dataStart < 0 || !s.eof() {
		return env, nil, false
	}
	if share == shareBody {
		env.Data = json.RawMessage(body[dataStart:dataEnd:dataEnd])
	} else {
		env.Data = append(json.RawMessage(nil), body[dataStart:dataEnd]...)
	}
	return env, ev, true
}

// fastDecode decodes a payload alone; ok is false when the slow path must decode it.
func fastDecode(t Type, v int, data []byte) (Event, bool) {
	dec := fastPayload(t, v)
	if dec == nil {
		return nil, false
	}
	s := scanner{b: data}
	s.ws()
	ev, ok := dec(&s)
	if !ok || !s.eof() {
		return nil, false
	}
	return ev, true
}

// internType returns the known type names without allocating a new string for each event.
func internType(t string) Type {
	for _, k := range hotTypes {
		if string(k) == t {
			return k
		}
	}
	return Type(t)
}

var hotTypes = [...]Type{"pin.requested", "pin.placed", "pin.status_observed", "pin.removed", "pin.replaced", "pin.unplaced"}

func fastPayload(t Type, v int) func(*scanner) (Event, bool) {
	if v != 1 {
		return nil
	}
	switch t {
	case "pin.requested":
		return decodePinRequested
	case "pin.placed":
		return decodePinPlaced
	case "pin.status_observed":
		return decodePinStatusObserved
	case "pin.removed":
		return decodePinRemoved
	case "pin.replaced":
		return decodePinReplaced
	case "pin.unplaced":
		return decodePinUnplaced
	}
	return nil
}

// object reads an object whose keys field decodes (false: unknown key or bad value); every key at most once
// (bits are the field's index, up to 16 fields).
func (s *scanner) object(field func(key []byte) (bit uint16, ok bool)) bool {
	if !s.begin('{') {
		return false
	}
	var seen uint16
	for more := !s.end('}'); more; {
		key, ok := s.key()
		if !ok {
			return false
		}
		bit, ok := field(key)
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		if more, ok = s.next('}'); !ok {
			return false
		}
	}
	return true
}

func decodePinRequested(s *scanner) (Event, bool) {
	var e PinRequested
	ok := s.object(func(key []byte) (bit uint16, ok bool) {
		switch string(key) {
		case "org_id":
			e.OrgID, ok = s.str()
			return 1, ok
		case "request_id":
			e.RequestID, ok = s.str()
			return 2, ok
		case "cid":
			e.CID, ok = s.str()
			return 4, ok
		case "name":
			e.Name, ok = s.str()
			return 8, ok
		case "origins":
			e.Origins, ok = s.strs()
			return 16, ok
		case "meta":
			e.Meta, ok = s.strMap()
			return 32, ok
		case "replaces":
			e.Replaces, ok = s.str()
			return 64, ok
		case "created":
			e.Created, ok = s.time()
			return 128, ok
		}
		return 0, false
	})
	return e, ok
}

func decodePinPlaced(s *scanner) (Event, bool) {
	var e PinPlaced
	ok := s.object(func(key []byte) (bit uint16, ok bool) {
		switch string(key) {
		case "org_id":
			e.OrgID, ok = s.str()
			return 1, ok
		case "request_id":
			e.RequestID, ok = s.str()
			return 2, ok
		case "node_id":
			e.NodeID, ok = s.str()
			return 4, ok
		case "cid":
			e.CID, ok = s.str()
			return 8, ok
		case "origins":
			e.Origins, ok = s.strs()
			return 16, ok
		case "term":
			e.Term, ok = s.uint()
			return 32, ok
		case "moved_from":
			e.MovedFrom, ok = s.str()
			return 64, ok
		}
		return 0, false
	})
	return e, ok
}

func decodePinStatusObserved(s *scanner) (Event, bool) {
	var e PinStatusObserved
	ok := s.object(func(key []byte) (bit uint16, ok bool) {
		switch string(key) {
		case "org_id":
			e.OrgID, ok = s.str()
			return 1, ok
		case "request_id":
			e.RequestID, ok = s.str()
			return 2, ok
		case "node_id":
			e.NodeID, ok = s.str()
			return 4, ok
		case "cid":
			e.CID, ok = s.str()
			return 8, ok
		case "status":
			e.Status, ok = s.str()
			return 16, ok
		case "info":
			e.Info, ok = s.strMap()
			return 32, ok
		case "placed_seq":
			e.PlacedSeq, ok = s.uint()
			return 64, ok
		}
		return 0, false
	})
	return e, ok
}

func decodePinRemoved(s *scanner) (Event, bool) {
	var e PinRemoved
	ok := s.object(func(key []byte) (bit uint16, ok bool) {
		switch string(key) {
		case "org_id":
			e.OrgID, ok = s.str()
			return 1, ok
		case "request_id":
			e.RequestID, ok = s.str()
			return 2, ok
		}
		return 0, false
	})
	return e, ok
}

func decodePinReplaced(s *scanner) (Event, bool) {
	var e PinReplaced
	ok := s.object(func(key []byte) (bit uint16, ok bool) {
		switch string(key) {
		case "org_id":
			e.OrgID, ok = s.str()
			return 1, ok
		case "request_id":
			e.RequestID, ok = s.str()
			return 2, ok
		case "replaced_by":
			e.ReplacedBy, ok = s.str()
			return 4, ok
		}
		return 0, false
	})
	return e, ok
}

func decodePinUnplaced(s *scanner) (Event, bool) {
	var e PinUnplaced
	ok := s.object(func(key []byte) (bit uint16, ok bool) {
		switch string(key) {
		case "org_id":
			e.OrgID, ok = s.str()
			return 1, ok
		case "request_id":
			e.RequestID, ok = s.str()
			return 2, ok
		case "node_id":
			e.NodeID, ok = s.str()
			return 4, ok
		case "cid":
			e.CID, ok = s.str()
			return 8, ok
		case "reason":
			e.Reason, ok = s.str()
			return 16, ok
		case "term":
			e.Term, ok = s.uint()
			return 32, ok
		}
		return 0, false
	})
	return e, ok
}

// scanner reads JSON tokens from b. Every method skips the whitespace before its token and reports false on
// anything it does not accept, valid JSON or not.
type scanner struct {
	b   []byte
	i   int
	src string // string(b) when strings are to share it ("": each string is its own copy)
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// begin consumes c (an opening bracket).
func (s *scanner) begin(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end consumes c (a closing bracket) when it comes next: an empty object or array.
func (s *scanner) end(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// next consumes the comma before another member (more) or the closing bracket c.
func (s *scanner) next(c byte) (more, ok bool) {
	s.ws()
	if s.i >= len(s.b) {
		return false, false
	}
	switch s.b[s.i] {
	case ',':
		s.i++
		return true, true
	case c:
		s.i++
		return false, true
	}
	return false, false
}

func (s *scanner) eof() bool {
	s.ws()
	return s.i == len(s.b)
}

// key reads a member's key and its colon. Keys are taken only as plain ASCII without escapes.
func (s *scanner) key() ([]byte, bool) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		c := s.b[j]
		if c == '"' {
			key := s.b[start:j]
			s.i = j + 1
			s.ws()
			if s.i >= len(s.b) || s.b[s.i] != ':' {
				return nil, false
			}
			s.i++
			return key, true
		}
		if c == '\\' || c < ' ' || c >= utf8.RuneSelf {
			return nil, false
		}
	}
	return nil, false
}

// str reads a string. One with escapes is unquoted by encoding/json (so that it is exactly what it makes of it);
// invalid UTF-8 is left to the slow path.
func (s *scanner) str() (string, bool) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return "", false
	}
	start := s.i + 1
	ascii, escaped := true, false
	for j := start; j < len(s.b); j++ {
		c := s.b[j]
		switch {
		case c == '"':
			raw := s.b[start:j]
			s.i = j + 1
			if escaped {
				var out string
				if json.Unmarshal(s.b[start-1:j+1], &out) != nil {
					return "", false
				}
				return out, true
			}
			if !ascii && !utf8.Valid(raw) {
				return "", false
			}
			if s.src != "" {
				return s.src[start:j], true
			}
			return string(raw), true
		case c == '\\':
			escaped = true
			j++ // the escaped character is never the closing quote
		case c < ' ':
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// strs reads an array of strings.
func (s *scanner) strs() ([]string, bool) {
	if !s.begin('[') {
		return nil, false
	}
	out := []string{}
	for more := !s.end(']'); more; {
		v, ok := s.str()
		if !ok {
			return nil, false
		}
		out = append(out, v)
		if more, ok = s.next(']'); !ok {
			return nil, false
		}
	}
	return out, true
}

// strMap reads an object of strings.
func (s *scanner) strMap() (map[string]string, bool) {
	if !s.begin('{') {
		return nil, false
	}
	out := map[string]string{}
	for more := !s.end('}'); more; {
		k, ok := s.str()
		if !ok {
			return nil, false
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return nil, false
		}
		s.i++
		v, ok := s.str()
		if !ok {
			return nil, false
		}
		out[k] = v
		if more, ok = s.next('}'); !ok {
			return nil, false
		}
	}
	return out, true
}

// digits reads an integer literal's digits (no sign, no leading zero, at most 18 digits: no overflow).
func (s *scanner) digits() (uint64, bool) {
	start := s.i
	var n uint64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		n = n*10 + uint64(s.b[s.i]-'0')
		s.i++
	}
	l := s.i - start
	if l == 0 || l > 18 || (l > 1 && s.b[start] == '0') {
		return 0, false
	}
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E', '-', '+':
			return 0, false
		}
	}
	return n, true
}

func (s *scanner) int(signed bool) (int64, bool) {
	s.ws()
	neg := false
	if signed && s.i < len(s.b) && s.b[s.i] == '-' {
		neg = true
		s.i++
	}
	n, ok := s.digits()
	if !ok {
		return 0, false
	}
	if neg {
		return -int64(n), true
	}
	return int64(n), true
}

func (s *scanner) uint() (uint64, bool) {
	s.ws()
	return s.digits()
}

// time reads a timestamp as encoding/json does: time.Time.UnmarshalJSON of the quoted string.
func (s *scanner) time() (time.Time, bool) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return time.Time{}, false
	}
	start := s.i
	for j := start + 1; j < len(s.b); j++ {
		c := s.b[j]
		if c == '"' {
			s.i = j + 1
			var t time.Time
			if t.UnmarshalJSON(s.b[start:s.i]) != nil {
				return time.Time{}, false
			}
			return t, true
		}
		if c == '\\' || c < ' ' || c >= utf8.RuneSelf {
			return time.Time{}, false
		}
	}
	return time.Time{}, false
}
