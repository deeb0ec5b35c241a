package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as a Go duration string ("15s", "10m", "720h") that may also start with
// a whole number of days ("30d", "1d12h"). A day is 24 hours. Negative durations are rejected.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d the way it is written in a config file, without zero minute and second components:
// 720h, 1h30m, 15s, 1.5s.
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// ParseDuration parses a Duration; see Duration for the accepted forms.
func ParseDuration(s string) (Duration, error) {
	in := strings.TrimSpace(s)
	bad := fmt.Errorf("%q is not a duration; use e.g. 15s, 10m, 720h or 30d (units: ms, s, m, h, d)", s)
	if in == "" {
		return 0, bad
	}
	if strings.HasPrefix(in, "-") {
		return 0, fmt.Errorf("%q is negative; use a positive duration, e.g. 15s, 10m, 720h or 30d", s)
	}
	var days int64
	if i := strings.IndexByte(in, 'd'); i >= 0 {
		n, err := strconv.ParseInt(in[:i], 10, 64)
		if err != nil || n < 0 {
			return 0, bad
		}
		days, in = n, in[i+1:]
		if in == "" {
			in = "0"
		}
	}
	rest, err := time.ParseDuration(in)
	if err != nil || rest < 0 {
		return 0, bad
	}
	const day = int64(24 * time.Hour)
	if days > (math.MaxInt64-int64(rest))/day {
		return 0, fmt.Errorf("%q is too long; the maximum is about 106751d", s)
	}
	return Duration(days*day + int64(rest)), nil
}

// UnmarshalText implements encoding.TextUnmarshaler (used for environment variables).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a duration such as 15s, got %s", kindName(n))
	}
	return d.UnmarshalText([]byte(n.Value))
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// ByteSize is a number of bytes, written as a plain integer (1048576) or with a unit: B, KiB, MiB, GiB, TiB
// (powers of 1024) or KB, MB, GB, TB (powers of 1000). Units are case-insensitive; a space before the unit is
// allowed.
type ByteSize int64

// Int64 returns b as an int64.
func (b ByteSize) Int64() int64 { return int64(b) }

var byteUnits = []struct {
	name string
	mult int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3},
	{"B", 1},
}

// String formats b with the largest binary unit that divides it exactly (1MiB, 64KiB), or as a plain integer.
func (b ByteSize) String() string {
	if b != 0 {
		for _, u := range byteUnits[:4] {
			if int64(b)%u.mult == 0 {
				return strconv.FormatInt(int64(b)/u.mult, 10) + u.name
			}
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// ParseByteSize parses a ByteSize; see ByteSize for the accepted forms.
func ParseByteSize(s string) (ByteSize, error) {
	bad := fmt.Errorf("%q is not a size; use e.g. 1048576, 64KiB or 1MiB", s)
	in := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if len(in) > len(u.name) && strings.EqualFold(in[len(in)-len(u.name):], u.name) {
			mult, in = u.mult, strings.TrimSpace(in[:len(in)-len(u.name)])
			break
		}
	}
	if in == "" || in[0] == '+' || in[0] == '-' {
		return 0, bad
	}
	n, err := strconv.ParseInt(in, 10, 64)
	if err != nil {
		return 0, bad
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalText implements encoding.TextUnmarshaler (used for environment variables).
func (b *ByteSize) UnmarshalText(t []byte) error {
	v, err := ParseByteSize(string(t))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a size such as 1MiB, got %s", kindName(n))
	}
	return b.UnmarshalText([]byte(n.Value))
}

// MarshalYAML implements yaml.Marshaler: a plain integer, or a string with a unit.
func (b ByteSize) MarshalYAML() (any, error) {
	if s := b.String(); s != strconv.FormatInt(int64(b), 10) {
		return s, nil
	}
	return int64(b), nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "nothing"
}
