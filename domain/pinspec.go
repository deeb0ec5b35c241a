package domain

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multiaddr"
)

// Limits the spec leaves open (pinning-api.md §10.7) and a few of our own.
const (
	MaxNameBytes      = 255
	MaxMetaKeys       = 64
	MaxMetaKeyBytes   = 128
	MaxMetaValueBytes = 1024
	MaxMetaBytes      = 16 << 10
	MaxOrigins        = 20
	MaxCIDBytes       = 512
	MaxOriginBytes    = 1024
)

// PinSpec is the pin object a client asks for (the spec's Pin schema), validated.
type PinSpec struct {
	CID     string
	Name    string
	Origins []string
	Meta    map[string]string
}

// ParsedCID is a validated CID with the key used to match spellings of the same content.
type ParsedCID struct {
	CID cid.Cid
	// Key is the multihash: v0 "Qm…" and v1 "bafy…" spellings of the same content share it.
	Key []byte
}

// ParseCID validates a CID string.
func ParseCID(s string) (ParsedCID, error) {
	if s == "" {
		return ParsedCID{}, Errorf(ErrInvalid, "cid is required")
	}
	if len(s) > MaxCIDBytes {
		return ParsedCID{}, Errorf(ErrInvalid, "cid is %d bytes long; a CID is at most %d", len(s), MaxCIDBytes)
	}
	c, err := cid.Decode(s)
	if err != nil {
		return ParsedCID{}, Errorf(ErrInvalid, "cid %q is not a valid CID: %v", clip(s), err)
	}
	return ParsedCID{CID: c, Key: []byte(c.Hash())}, nil
}

// ValidatePinSpec checks a requested pin against the spec and this service's limits, and normalises the
// origins: they are hints, so unparseable ones are dropped and at most MaxOrigins kept, never an error.
func ValidatePinSpec(in PinSpec) (PinSpec, ParsedCID, error) {
	pc, err := ParseCID(in.CID)
	if err != nil {
		return PinSpec{}, ParsedCID{}, err
	}
	if err := ValidateName(in.Name); err != nil {
		return PinSpec{}, ParsedCID{}, err
	}
	if err := ValidateMeta(in.Meta); err != nil {
		return PinSpec{}, ParsedCID{}, err
	}
	out := PinSpec{CID: in.CID, Name: in.Name, Origins: CleanOrigins(in.Origins)}
	if len(in.Meta) > 0 {
		out.Meta = in.Meta
	}
	return out, pc, nil
}

// ValidateName checks a pin name.
func ValidateName(name string) error {
	if len(name) > MaxNameBytes {
		return Errorf(ErrInvalid, "name is %d bytes long; the limit is %d bytes", len(name), MaxNameBytes)
	}
	return checkText("name", name)
}

// ValidateMeta checks a meta map against the documented limits.
func ValidateMeta(meta map[string]string) error {
	if len(meta) > MaxMetaKeys {
		return Errorf(ErrInvalid, "meta has %d keys; the limit is %d keys", len(meta), MaxMetaKeys)
	}
	for k, v := range meta {
		if k == "" {
			return Errorf(ErrInvalid, "meta has an empty key; keys must be 1 to %d bytes", MaxMetaKeyBytes)
		}
		if len(k) > MaxMetaKeyBytes {
			return Errorf(ErrInvalid, "meta key %q is %d bytes long; the limit is %d bytes per key", clip(k), len(k), MaxMetaKeyBytes)
		}
		if len(v) > MaxMetaValueBytes {
			return Errorf(ErrInvalid, "meta value of key %q is %d bytes long; the limit is %d bytes per value", clip(k), len(v), MaxMetaValueBytes)
		}
		if err := checkText("meta key", k); err != nil {
			return err
		}
		if err := checkText("meta value of key "+strconv.Quote(clip(k)), v); err != nil {
			return err
		}
	}
	// The real encoded size: escaping can make a value several times longer than its bytes.
	if b, err := json.Marshal(meta); err != nil || len(b) > MaxMetaBytes {
		return Errorf(ErrInvalid, "meta is %d bytes as JSON; the limit is %d bytes for the whole object", len(b), MaxMetaBytes)
	}
	return nil
}

// checkText rejects what PostgreSQL text cannot store (NUL) and invalid UTF-8.
func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return Errorf(ErrInvalid, "%s is not valid UTF-8", what)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return Errorf(ErrInvalid, "%s contains a NUL character, which is not allowed", what)
	}
	return nil
}

// CleanOrigins keeps the origins that parse as multiaddrs, without duplicates, at most MaxOrigins of them.
func CleanOrigins(origins []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, o := range origins {
		if len(out) == MaxOrigins {
			break
		}
		if o == "" || len(o) > MaxOriginBytes || seen[o] {
			continue
		}
		if _, err := multiaddr.NewMultiaddr(o); err != nil {
			continue
		}
		seen[o] = true
		out = append(out, o)
	}
	return out
}

// clip shortens s for an error message, on a character boundary.
func clip(s string) string {
	if len(s) <= 40 {
		return s
	}
	cut := 40
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
