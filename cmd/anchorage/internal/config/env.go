package config

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// EnvPrefix starts the name of every anchorage environment variable.
const EnvPrefix = "ANCHORAGE_"

// EnvVar is the environment variable that overrides one config key.
type EnvVar struct {
	Name string // e.g. ANCHORAGE_SERVER_LISTEN
	Key  string // e.g. server.listen
}

// EnvName returns the environment variable for a key path: EnvName("postgres.apiURL") is
// "ANCHORAGE_POSTGRES_APIURL".
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// EnvVars lists the ANCHORAGE_ variable of every leaf key, in file order.
func EnvVars() []EnvVar {
	var out []EnvVar
	var c Config
	eachLeaf(reflect.ValueOf(&c).Elem(), "", func(key string, _ reflect.Value) {
		out = append(out, EnvVar{Name: EnvName(key), Key: key})
	})
	return out
}

// OIDCEnvAliases maps the conventional OIDC_* variables to the keys they set. The ANCHORAGE_ variable of the
// same key wins when both are set.
var OIDCEnvAliases = []EnvVar{
	{Name: "OIDC_ISSUER", Key: "auth.authentik.issuer"},
	{Name: "OIDC_CLIENT_ID", Key: "auth.authentik.clientID"},
	{Name: "OIDC_CLIENT_SECRET", Key: "auth.authentik.clientSecret"},
	{Name: "OIDC_REDIRECT_URI", Key: "auth.authentik.redirectURI"},
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// eachLeaf calls fn with the key path and the settable value of every leaf under v: every field that is not a
// plain struct (scalars, lists, and types that parse themselves, such as Duration).
func eachLeaf(v reflect.Value, path string, fn func(key string, v reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		key := joinKey(path, yamlName(f))
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(textUnmarshalerType) {
			eachLeaf(fv, key, fn)
			continue
		}
		fn(key, fv)
	}
}

// applyEnv applies the OIDC_* aliases, then the ANCHORAGE_ variables, so the latter win.
func applyEnv(cfg *Config, getenv func(string) string) error {
	leaves := map[string]reflect.Value{}
	var order []string
	eachLeaf(reflect.ValueOf(cfg).Elem(), "", func(key string, v reflect.Value) {
		leaves[key] = v
		order = append(order, key)
	})
	var errs []error
	set := func(name, key string) {
		s := getenv(name)
		if s == "" {
			return
		}
		if err := setFromString(leaves[key], s); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", name, key, err))
		}
	}
	for _, a := range OIDCEnvAliases {
		set(a.Name, a.Key)
	}
	for _, key := range order {
		set(EnvName(key), key)
	}
	return errors.Join(errs...)
}

// setFromString parses s into v according to v's type. Lists are comma-separated; signing keys are
// id:path[:primary] separated by commas.
func setFromString(v reflect.Value, s string) error {
	switch p := v.Addr().Interface().(type) {
	case *[]SigningKey:
		keys, err := parseSigningKeys(s)
		if err != nil {
			return err
		}
		*p = keys
		return nil
	case encoding.TextUnmarshaler:
		return p.UnmarshalText([]byte(s))
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || v.OverflowInt(n) {
			return fmt.Errorf("%q is not a whole number", s)
		}
		v.SetInt(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("cannot be set from the environment")
		}
		list := reflect.MakeSlice(v.Type(), 0, 0)
		for _, item := range splitList(s) {
			list = reflect.Append(list, reflect.ValueOf(item).Convert(v.Type().Elem()))
		}
		v.Set(list)
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// parseSigningKeys parses "k1:/etc/anchorage/k1.key:primary,k2:/etc/anchorage/k2.key". The path may itself
// contain ':'; a trailing ":primary" marks the primary key.
func parseSigningKeys(s string) ([]SigningKey, error) {
	var keys []SigningKey
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		id, path, ok := strings.Cut(item, ":")
		k := SigningKey{ID: id}
		k.Path, k.Primary = strings.CutSuffix(path, ":primary")
		if !ok || id == "" || k.Path == "" {
			return nil, fmt.Errorf("%q is not id:path[:primary]; use e.g. k1:/etc/anchorage/k1.key:primary,k2:/etc/anchorage/k2.key", item)
		}
		keys = append(keys, k)
	}
	return keys, nil
}
