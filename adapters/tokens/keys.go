// Package tokens issues and verifies anchorage's API tokens: per-device JWTs signed with HS256 by one of a ring
// of configured keys (auth.apiToken.signingKeys), named by the JWT's kid so keys can be rotated, and revocable
// through the event log (token.revoked), which the verifier consults through a Registry.
//
// Key material never appears in errors or logs.
package tokens

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
)

// MinKeyBytes is the shortest signing key accepted (HS256 wants at least the hash size).
const MinKeyBytes = 32

// maxKeyFileBytes bounds what is read from a key file.
const maxKeyFileBytes = 4096

const configPath = "auth.apiToken.signingKeys"

// KeySpec is one configured signing key (auth.apiToken.signingKeys: [{id, path, primary}]).
type KeySpec struct {
	// ID is the key's kid: 1-64 of [A-Za-z0-9._-].
	ID string
	// Path is the key file, as written by GenerateKeyFile.
	Path string
	// Primary marks the key new tokens are signed with; exactly one key is primary.
	Primary bool
}

// KeyRing holds the signing keys by id. It is immutable once loaded and safe for concurrent use.
type KeyRing struct {
	keys    map[string][]byte
	ids     []string
	primary string
}

// LoadKeys reads and validates the configured signing keys.
func LoadKeys(specs []KeySpec) (*KeyRing, error) {
	if len(specs) == 0 {
		return nil, fmt.Errorf("%s: no signing key is configured; generate one with `anchorage admin key generate --out <path>` "+
			"and list it as {id: k1, path: <path>, primary: true}", configPath)
	}
	ring := &KeyRing{keys: make(map[string][]byte, len(specs))}
	paths := map[string]string{}
	var primaries []string
	for i, s := range specs {
		if s.ID == "" {
			return nil, fmt.Errorf("%s[%d]: key has no id; give it one (1-64 of A-Z a-z 0-9 . _ -), e.g. id: k%d", configPath, i, i+1)
		}
		if !validKeyID(s.ID) {
			return nil, fmt.Errorf("%s[%d]: key id %q is invalid; use 1-64 of A-Z a-z 0-9 . _ -", configPath, i, clip(s.ID))
		}
		if _, dup := ring.keys[s.ID]; dup {
			return nil, fmt.Errorf("%s: key id %q is used twice; give every key a distinct id", configPath, s.ID)
		}
		if s.Path == "" {
			return nil, fmt.Errorf("%s: key %q has no path; set path to a key file written by `anchorage admin key generate --out <path>`", configPath, s.ID)
		}
		if other, dup := paths[s.Path]; dup {
			return nil, fmt.Errorf("%s: keys %q and %q both use file %s; each key needs its own file", configPath, other, s.ID, s.Path)
		}
		key, err := readKeyFile(s.ID, s.Path)
		if err != nil {
			return nil, err
		}
		for _, id := range ring.ids {
			if subtle.ConstantTimeCompare(ring.keys[id], key) == 1 {
				return nil, fmt.Errorf("%s: keys %q and %q have the same key material (files %s and %s); generate a fresh key for one of them",
					configPath, id, s.ID, paths[id], s.Path)
			}
		}
		paths[s.Path] = s.ID
		ring.keys[s.ID] = key
		ring.ids = append(ring.ids, s.ID)
		if s.Primary {
			primaries = append(primaries, s.ID)
		}
	}
	switch len(primaries) {
	case 1:
		ring.primary = primaries[0]
	case 0:
		return nil, fmt.Errorf("%s: no key is marked primary; set primary: true on the key new tokens should be signed with", configPath)
	default:
		return nil, fmt.Errorf("%s: keys %s are all marked primary; exactly one key must be primary", configPath, strings.Join(quoteAll(primaries), ", "))
	}
	return ring, nil
}

func readKeyFile(id, path string) ([]byte, error) {
	prefix := fmt.Sprintf("%s: key %q", configPath, id)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: file %s is not readable: %w; run `anchorage admin key generate --out %s`", prefix, path, err, path)
		}
		return nil, fmt.Errorf("%s: file %s is not readable: %w; check that it exists and is owned by the user anchorage runs as", prefix, path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: file %s cannot be inspected: %w", prefix, path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %s is not a regular file; point path at a key file written by `anchorage admin key generate --out <path>`", prefix, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s: file %s has mode %#o, which gives other users access to the signing key; run `chmod 600 %s`", prefix, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: file %s is not readable: %w", prefix, path, err)
	}
	if len(data) > maxKeyFileBytes {
		return nil, fmt.Errorf("%s: file %s is larger than %d bytes, so it is not a key file; run `anchorage admin key generate --out <new path>`", prefix, path, maxKeyFileBytes)
	}
	text := strings.TrimSpace(string(data))
	key, err := base64.RawURLEncoding.DecodeString(text)
	clear(data)
	if err != nil {
		// The decoder's error would point into the key material; say only what is wrong.
		return nil, fmt.Errorf("%s: file %s does not hold one line of unpadded base64url; regenerate it with `anchorage admin key generate --out <new path>`", prefix, path)
	}
	if len(key) < MinKeyBytes {
		n := len(key)
		clear(key)
		return nil, fmt.Errorf("%s: file %s holds a %d-byte key; keys must be at least %d bytes; regenerate it with `anchorage admin key generate --out <new path>`",
			prefix, path, n, MinKeyBytes)
	}
	return key, nil
}

// GenerateKeyFile writes a new random signing key to path with mode 0600. It refuses to overwrite an existing
// file.
func GenerateKeyFile(path string) error {
	key := make([]byte, MinKeyBytes)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("generate signing key: %w", err)
	}
	defer clear(key)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("refusing to overwrite %s: it already exists, and replacing a key invalidates every token signed with it; "+
				"choose another path (and add it as a new key id to %s to rotate)", path, configPath)
		}
		return fmt.Errorf("create key file: %w", err)
	}
	line := make([]byte, base64.RawURLEncoding.EncodedLen(len(key))+1)
	base64.RawURLEncoding.Encode(line, key)
	line[len(line)-1] = '\n'
	defer clear(line)
	err = f.Chmod(0o600) // in case the umask removed the owner's bits
	if err == nil {
		_, err = f.Write(line)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	return nil
}

// PrimaryID is the id of the key new tokens are signed with.
func (k *KeyRing) PrimaryID() string { return k.primary }

// IDs lists the configured key ids in configuration order.
func (k *KeyRing) IDs() []string { return slices.Clone(k.ids) }

// Has reports whether a key with that id is configured.
func (k *KeyRing) Has(id string) bool {
	_, ok := k.keys[id]
	return ok
}

func (k *KeyRing) key(id string) ([]byte, bool) {
	if k == nil {
		return nil, false
	}
	key, ok := k.keys[id]
	return key, ok
}

func validKeyID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// clip shortens untrusted text for messages.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:64] + "…"
}
