package tokens_test

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/anchorage-pin/anchorage/adapters/tokens"
)

// genKey writes a fresh key file named name in dir and returns its path.
func genKey(t testing.TB, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, tokens.GenerateKeyFile(p))
	return p
}

// keyBytes reads a key file back, as a forger who stole it would.
func keyBytes(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	k, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	return k
}

func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), mode))
	require.NoError(t, os.Chmod(p, mode)) // not subject to the umask
	return p
}

func TestGenerateKeyFile(t *testing.T) {
	dir := t.TempDir()
	p := genKey(t, dir, "k1.key")

	st, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	raw, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(string(raw), "\n"), "one line")
	assert.NotContains(t, string(raw), "=", "no padding")
	assert.Len(t, keyBytes(t, p), 32)

	// A second key differs.
	assert.NotEqual(t, keyBytes(t, p), keyBytes(t, genKey(t, dir, "k2.key")))

	// Refuses to overwrite, and leaves the existing key alone.
	err = tokens.GenerateKeyFile(p)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "refusing to overwrite "+p)
	after, err2 := os.ReadFile(p)
	require.NoError(t, err2)
	assert.Equal(t, raw, after)
	assert.NotContains(t, err.Error(), strings.TrimSpace(string(raw)))

	// Missing directory.
	err = tokens.GenerateKeyFile(filepath.Join(dir, "nope", "k.key"))
	require.Error(t, err)
}

func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	k1 := genKey(t, dir, "k1.key")
	k2 := genKey(t, dir, "k2.key")

	ring, err := tokens.LoadKeys([]tokens.KeySpec{{ID: "k1", Path: k1}, {ID: "k2", Path: k2, Primary: true}})
	require.NoError(t, err)
	assert.Equal(t, "k2", ring.PrimaryID())
	assert.Equal(t, []string{"k1", "k2"}, ring.IDs())
	assert.True(t, ring.Has("k1"))
	assert.False(t, ring.Has("k3"))

	// Surrounding whitespace is accepted.
	spaced := writeFile(t, dir, "spaced.key", "\n  "+base64.RawURLEncoding.EncodeToString(make32(7))+"  \r\n\n", 0o600)
	_, err = tokens.LoadKeys([]tokens.KeySpec{{ID: "s", Path: spaced, Primary: true}})
	require.NoError(t, err)
}

func make32(b byte) []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func TestLoadKeysErrors(t *testing.T) {
	dir := t.TempDir()
	good := genKey(t, dir, "good.key")
	good2 := genKey(t, dir, "good2.key")
	secret := base64.RawURLEncoding.EncodeToString(make32(1))
	short := writeFile(t, dir, "short.key", base64.RawURLEncoding.EncodeToString(make([]byte, 31))+"\n", 0o600)
	badB64 := writeFile(t, dir, "bad.key", "this is not base64!!"+secret+"\n", 0o600)
	padded := writeFile(t, dir, "padded.key", base64.URLEncoding.EncodeToString(make([]byte, 32))+"\n", 0o600)
	stdB64 := writeFile(t, dir, "std.key", strings.Repeat("+/", 22)+"\n", 0o600)
	empty := writeFile(t, dir, "empty.key", "\n", 0o600)
	open := writeFile(t, dir, "open.key", secret+"\n", 0o644)
	groupOnly := writeFile(t, dir, "group.key", secret+"\n", 0o640)
	huge := writeFile(t, dir, "huge.key", strings.Repeat("A", 5000), 0o600)
	copyOfGood, err := os.ReadFile(good)
	require.NoError(t, err)
	same := writeFile(t, dir, "same.key", string(copyOfGood), 0o600)
	missing := filepath.Join(dir, "missing.key")

	tests := []struct {
		name  string
		specs []tokens.KeySpec
		want  []string // fragments of the error
	}{
		{"no keys", nil, []string{"auth.apiToken.signingKeys", "no signing key", "anchorage admin key generate"}},
		{"missing file", []tokens.KeySpec{{ID: "k2", Path: missing, Primary: true}},
			[]string{`key "k2"`, "file " + missing + " is not readable", "no such file", "run `anchorage admin key generate --out " + missing + "`"}},
		{"directory", []tokens.KeySpec{{ID: "k1", Path: dir, Primary: true}}, []string{`key "k1"`, "not a regular file"}},
		{"short key", []tokens.KeySpec{{ID: "k1", Path: short, Primary: true}}, []string{`key "k1"`, short, "31-byte key", "at least 32 bytes"}},
		{"empty file", []tokens.KeySpec{{ID: "k1", Path: empty, Primary: true}}, []string{`key "k1"`, empty, "0-byte key"}},
		{"bad base64", []tokens.KeySpec{{ID: "k1", Path: badB64, Primary: true}}, []string{`key "k1"`, badB64, "base64url", "regenerate"}},
		{"padded base64", []tokens.KeySpec{{ID: "k1", Path: padded, Primary: true}}, []string{`key "k1"`, padded, "unpadded base64url"}},
		{"std base64 alphabet", []tokens.KeySpec{{ID: "k1", Path: stdB64, Primary: true}}, []string{`key "k1"`, stdB64, "base64url"}},
		{"too large", []tokens.KeySpec{{ID: "k1", Path: huge, Primary: true}}, []string{`key "k1"`, huge, "larger than"}},
		{"mode 0644", []tokens.KeySpec{{ID: "k1", Path: open, Primary: true}}, []string{`key "k1"`, open, "0644", "chmod 600 " + open}},
		{"mode 0640", []tokens.KeySpec{{ID: "k1", Path: groupOnly, Primary: true}}, []string{`key "k1"`, "0640", "chmod 600"}},
		{"duplicate id", []tokens.KeySpec{{ID: "k1", Path: good, Primary: true}, {ID: "k1", Path: good2}}, []string{`"k1"`, "used twice"}},
		{"empty id", []tokens.KeySpec{{ID: "k1", Path: good, Primary: true}, {Path: good2}}, []string{"signingKeys[1]", "no id"}},
		{"id unsafe for a header", []tokens.KeySpec{{ID: "k 1\"", Path: good, Primary: true}}, []string{"signingKeys[0]", "invalid", "A-Z a-z 0-9"}},
		{"id too long", []tokens.KeySpec{{ID: strings.Repeat("k", 65), Path: good, Primary: true}}, []string{"signingKeys[0]", "invalid"}},
		{"no path", []tokens.KeySpec{{ID: "k1", Primary: true}}, []string{`key "k1"`, "no path"}},
		{"same file twice", []tokens.KeySpec{{ID: "k1", Path: good, Primary: true}, {ID: "k2", Path: good}}, []string{`"k1"`, `"k2"`, good}},
		{"same key material", []tokens.KeySpec{{ID: "k1", Path: good, Primary: true}, {ID: "k2", Path: same}}, []string{`"k1"`, `"k2"`, "same key material"}},
		{"zero primaries", []tokens.KeySpec{{ID: "k1", Path: good}, {ID: "k2", Path: good2}}, []string{"no key is marked primary", "primary: true"}},
		{"two primaries", []tokens.KeySpec{{ID: "k1", Path: good, Primary: true}, {ID: "k2", Path: good2, Primary: true}},
			[]string{`"k1", "k2"`, "exactly one key must be primary"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ring, err := tokens.LoadKeys(tt.specs)
			require.Error(t, err)
			assert.Nil(t, ring)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.Contains(t, err.Error(), "auth.apiToken.signingKeys")
			// No key material leaks.
			assert.NotContains(t, err.Error(), secret[:20])
			assert.NotContains(t, err.Error(), strings.TrimSpace(string(copyOfGood))[:20])
		})
	}
}
