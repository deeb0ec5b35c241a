package config

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const docsPath = "../../../../docs/configuration.md"

var codeRE = regexp.MustCompile("`([^`]*)`")

// docs/configuration.md lists every key once, with its variables and its default, and its example is valid.
func TestDocsMatchCode(t *testing.T) {
	raw, err := os.ReadFile(docsPath)
	require.NoError(t, err)
	doc := string(raw)

	defaults := map[string]string{}
	d := Default()
	eachLeaf(reflect.ValueOf(&d).Elem(), "", func(key string, v reflect.Value) {
		switch x := v.Interface().(type) {
		case fmt.Stringer:
			defaults[key] = x.String()
		default:
			if v.IsZero() && (v.Kind() == reflect.String || v.Kind() == reflect.Slice) {
				defaults[key] = "empty"
			} else {
				defaults[key] = fmt.Sprint(x)
			}
		}
	})
	aliases := map[string][]string{}
	for _, a := range OIDCEnvAliases {
		aliases[a.Key] = append(aliases[a.Key], a.Name)
	}

	rows := map[string]bool{}
	for line := range strings.SplitSeq(doc, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) != 6 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		m := codeRE.FindStringSubmatch(cells[1])
		if m == nil {
			continue
		}
		key := m[1]
		want, ok := defaults[key]
		if !ok {
			if strings.Contains(key, ".") || key == "dataDir" {
				t.Errorf("docs list %q, which is not a key", key)
			}
			continue // the format table
		}
		assert.False(t, rows[key], "%s listed twice", key)
		rows[key] = true

		var vars []string
		for _, v := range codeRE.FindAllStringSubmatch(cells[2], -1) {
			vars = append(vars, v[1])
		}
		assert.Equal(t, append([]string{EnvName(key)}, aliases[key]...), vars, "variables of %s", key)

		def := strings.TrimSpace(cells[3])
		if !strings.HasPrefix(def, "empty") || want != "empty" {
			got := codeRE.FindStringSubmatch(def)
			if assert.NotNil(t, got, "default of %s: %q", key, def) {
				assert.Equal(t, want, got[1], "default of %s", key)
			}
		}
	}
	for key := range defaults {
		assert.True(t, rows[key], "docs/configuration.md does not list %s", key)
	}

	_, example, ok := strings.Cut(doc, "## Complete example\n\n```yaml\n")
	require.True(t, ok, "complete example not found")
	example, _, ok = strings.Cut(example, "```")
	require.True(t, ok)
	cfg, err := Load(writeConfig(t, example), noEnv)
	require.NoError(t, err)
	require.NoError(t, cfg.Validate(ModeServe))
	assert.Equal(t, "https://auth.example.com/application/o/anchorage/", cfg.Auth.Authentik.Issuer)
}
