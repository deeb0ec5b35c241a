package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load returns Default(), overridden by the YAML file at path (skipped when path is ""), overridden by the
// environment as read through getenv (skipped when getenv is nil; an empty value counts as unset). It does not
// validate: call Resolve and Validate.
//
// The file is strict: an unknown or duplicate key, or a value of the wrong type, is an error naming the file,
// the line and the key path. Relative paths written in the file (dataDir, nats.storeDir, nats.credentialsFile,
// auth.apiToken.signingKeys[].path) are made absolute against the file's directory here; relative paths from
// defaults, the environment and flags are left for Resolve. All problems found are returned together.
func Load(path string, getenv func(string) string) (Config, error) {
	cfg := Default()
	if path != "" {
		if err := loadFile(&cfg, path); err != nil {
			return Config{}, err
		}
	}
	if getenv != nil {
		if err := applyEnv(&cfg, getenv); err != nil {
			return Config{}, err
		}
	}
	return cfg, nil
}

func loadFile(cfg *Config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file, or only comments
		}
		return yamlError(path, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return yamlError(path, err)
		}
		return fmt.Errorf("%s:%d: a config file holds one YAML document; remove the second \"---\" and what follows", path, extra.Line)
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind == yaml.ScalarNode && doc.ShortTag() == "!!null" {
		return nil
	}
	w := &walker{file: path, seen: map[string]bool{}}
	if doc.Kind != yaml.MappingNode {
		w.errorf(doc, "the top level must be a mapping of keys such as \"dataDir: /var/lib/anchorage\", got %s", kindName(doc))
	} else {
		w.mapping(doc, reflect.TypeFor[Config](), "")
	}
	if len(w.errs) > 0 {
		return errors.Join(w.errs...)
	}

	// The walk above reported everything it could find with key paths; the strict decoder does the assignment
	// and is the backstop for anything the walk does not model.
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(cfg); err != nil {
		return yamlError(path, err)
	}

	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	cfg.resolvePaths(dir, func(key string) bool { return w.seen[key] })
	return nil
}

var yamlLineRE = regexp.MustCompile(`^line (\d+): `)

// yamlError turns yaml's "yaml: line 3: msg" errors into "path:3: msg" ones.
func yamlError(path string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		errs := make([]error, len(te.Errors))
		for i, e := range te.Errors {
			errs[i] = lineError(path, e)
		}
		return errors.Join(errs...)
	}
	return lineError(path, strings.TrimPrefix(err.Error(), "yaml: "))
}

func lineError(path, msg string) error {
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s:%s: %s", path, m[1], msg[len(m[0]):])
	}
	return fmt.Errorf("%s: %s", path, msg)
}

// walker checks a YAML tree against the Config type, collecting every unknown key, duplicate key and bad value
// with its line and key path, and recording the key paths the file sets.
type walker struct {
	file string
	errs []error
	seen map[string]bool
}

func (w *walker) errorf(n *yaml.Node, format string, a ...any) {
	w.errs = append(w.errs, fmt.Errorf("%s:%d: %s", w.file, n.Line, fmt.Sprintf(format, a...)))
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func joinKey(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// yamlName is the config key of a struct field.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

func (w *walker) mapping(n *yaml.Node, t reflect.Type, path string) {
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolveAlias(n.Content[i]), n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			v = resolveAlias(v)
			merged := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				merged = v.Content
			}
			for _, m := range merged {
				if m = resolveAlias(m); m.Kind == yaml.MappingNode {
					w.mapping(m, t, path)
				} else {
					w.errorf(m, "%s: a merge (<<) needs a mapping, got %s", joinKey(path, "<<"), kindName(m))
				}
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			w.errorf(k, "keys must be plain names, got %s under %q", kindName(k), path)
			continue
		}
		full := joinKey(path, k.Value)
		f, ok := fieldByKey(t, k.Value)
		if !ok {
			w.errorf(k, "unknown key %q%s", full, suggest(t, k.Value, path))
			continue
		}
		if line, dup := first[k.Value]; dup {
			w.errorf(k, "duplicate key %q (first set at line %d); keep one", full, line)
			continue
		}
		first[k.Value] = k.Line
		w.value(v, f.Type, full)
	}
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (w *walker) value(n *yaml.Node, t reflect.Type, path string) {
	n = resolveAlias(n)
	w.seen[path] = true
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // yaml leaves scalars and structs unchanged and empties lists
	}
	switch {
	case reflect.PointerTo(t).Implements(unmarshalerType):
		if err := reflect.New(t).Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			w.errorf(n, "%s: %v", path, err)
		}
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.errorf(n, "%s: expected a mapping of keys, got %s", path, kindName(n))
			return
		}
		w.mapping(n, t, path)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.errorf(n, "%s: expected a list (e.g. [a, b] or one \"- item\" per line), got %s", path, kindName(n))
			return
		}
		for i, item := range n.Content {
			w.value(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		if n.Kind != yaml.ScalarNode {
			w.errorf(n, "%s: expected a single value, got %s", path, kindName(n))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			switch t.Kind() {
			case reflect.Int, reflect.Int64:
				w.errorf(n, "%s: %q is not a whole number", path, n.Value)
			case reflect.Bool:
				w.errorf(n, "%s: %q is not true or false", path, n.Value)
			default:
				w.errorf(n, "%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
			}
		}
	}
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if f := t.Field(i); f.IsExported() && yamlName(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// suggest proposes a close key at the same level, or else the full paths elsewhere that have this exact name.
func suggest(t reflect.Type, key, path string) string {
	best, bestD := "", -1
	lk := strings.ToLower(key)
	for i := range t.NumField() {
		name := yamlName(t.Field(i))
		d := editDistance(lk, strings.ToLower(name))
		if d <= max(1, (len(name)+1)/3) && (bestD < 0 || d < bestD) {
			best, bestD = name, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	var elsewhere []string
	for _, e := range EnvVars() {
		parent, name := "", e.Key
		if i := strings.LastIndexByte(e.Key, '.'); i >= 0 {
			parent, name = e.Key[:i], e.Key[i+1:]
		}
		if parent != path && strings.EqualFold(name, key) {
			elsewhere = append(elsewhere, fmt.Sprintf("%q", e.Key))
		}
	}
	switch len(elsewhere) {
	case 0:
		return ""
	case 1:
		return " (did you mean " + elsewhere[0] + "?)"
	}
	return " (did you mean " + strings.Join(elsewhere[:len(elsewhere)-1], ", ") + " or " + elsewhere[len(elsewhere)-1] + "?)"
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
