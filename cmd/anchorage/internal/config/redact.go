package config

import (
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// RedactedText is the placeholder that replaces secrets in Redacted, String and LogValue.
const RedactedText = "REDACTED"

// Redacted returns a copy of c that is safe to log: auth.authentik.clientSecret is replaced by "REDACTED", and
// so are passwords in the PostgreSQL DSNs (URL user info, password= parameters and key=value pairs) and in
// URLs with user info (server.publicURL, kubo.rpcURL, nats.cluster.routes). A DSN that cannot be parsed is
// replaced whole.
func (c Config) Redacted() Config {
	c = c.clone()
	if c.Auth.Authentik.ClientSecret != "" {
		c.Auth.Authentik.ClientSecret = RedactedText
	}
	c.Postgres.URL = redactDSN(c.Postgres.URL)
	c.Postgres.APIURL = redactDSN(c.Postgres.APIURL)
	c.Server.PublicURL = redactURL(c.Server.PublicURL)
	c.Kubo.RPCURL = redactURL(c.Kubo.RPCURL)
	c.Auth.Authentik.Issuer = redactURL(c.Auth.Authentik.Issuer)
	c.Auth.Authentik.RedirectURI = redactURL(c.Auth.Authentik.RedirectURI)
	for i, r := range c.NATS.Cluster.Routes {
		c.NATS.Cluster.Routes[i] = redactURL(r)
	}
	return c
}

// String renders the redacted configuration as YAML.
func (c Config) String() string {
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c.Redacted()); err != nil {
		return fmt.Sprintf("config: %v", err)
	}
	return b.String()
}

// LogValue implements slog.LogValuer: the redacted configuration as nested groups named after the keys.
func (c Config) LogValue() slog.Value {
	r := c.Redacted()
	return groupValue(reflect.ValueOf(&r).Elem())
}

func groupValue(v reflect.Value) slog.Value {
	t := v.Type()
	attrs := make([]slog.Attr, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, fv := yamlName(f), v.Field(i)
		switch x := fv.Interface().(type) {
		case fmt.Stringer: // Duration, ByteSize
			attrs = append(attrs, slog.String(name, x.String()))
			continue
		case []SigningKey:
			keys := make([]string, len(x))
			for j, k := range x {
				keys[j] = k.ID + ":" + k.Path
				if k.Primary {
					keys[j] += ":primary"
				}
			}
			attrs = append(attrs, slog.Any(name, keys))
			continue
		}
		switch fv.Kind() {
		case reflect.Struct:
			attrs = append(attrs, slog.Attr{Key: name, Value: groupValue(fv)})
		case reflect.String:
			attrs = append(attrs, slog.String(name, fv.String()))
		case reflect.Int, reflect.Int64:
			attrs = append(attrs, slog.Int64(name, fv.Int()))
		case reflect.Bool:
			attrs = append(attrs, slog.Bool(name, fv.Bool()))
		default:
			attrs = append(attrs, slog.Any(name, fv.Interface()))
		}
	}
	return slog.GroupValue(attrs...)
}

// redactURL hides the password of a URL's user info; anything else is returned unchanged.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), RedactedText)
	}
	return u.String()
}

var dsnPasswordRE = regexp.MustCompile(`(?i)(\b[a-z_]*password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']*)`)

// redactDSN hides passwords in a PostgreSQL URL or key=value DSN.
func redactDSN(s string) string {
	if s == "" {
		return s
	}
	if !strings.Contains(s, "://") {
		return dsnPasswordRE.ReplaceAllString(s, "${1}"+RedactedText)
	}
	u, err := url.Parse(s)
	if err != nil {
		return RedactedText
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), RedactedText)
	}
	q := u.Query()
	changed := false
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, RedactedText)
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.String()
}
