package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		str  string
	}{
		{"15s", 15 * time.Second, "15s"},
		{"720h", 720 * time.Hour, "720h"},
		{"30d", 30 * 24 * time.Hour, "720h"},
		{"1d12h", 36 * time.Hour, "36h"},
		{"1d30m", 24*time.Hour + 30*time.Minute, "24h30m"},
		{"90m", 90 * time.Minute, "1h30m"},
		{"1.5s", 1500 * time.Millisecond, "1.5s"},
		{"250ms", 250 * time.Millisecond, "250ms"},
		{"0", 0, "0s"},
		{"0d", 0, "0s"},
		{" 10m ", 10 * time.Minute, "10m"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			d, err := ParseDuration(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, d.D())
			assert.Equal(t, tc.str, d.String())
			back, err := ParseDuration(d.String())
			require.NoError(t, err)
			assert.Equal(t, d, back, "String must round-trip")
		})
	}
	for _, tc := range []struct{ in, want string }{
		{"15", `"15" is not a duration; use e.g. 15s, 10m, 720h or 30d (units: ms, s, m, h, d)`},
		{"", `"" is not a duration; use e.g. 15s, 10m, 720h or 30d (units: ms, s, m, h, d)`},
		{"soon", `"soon" is not a duration; use e.g. 15s, 10m, 720h or 30d (units: ms, s, m, h, d)`},
		{"1.5d", `"1.5d" is not a duration; use e.g. 15s, 10m, 720h or 30d (units: ms, s, m, h, d)`},
		{"d", `"d" is not a duration; use e.g. 15s, 10m, 720h or 30d (units: ms, s, m, h, d)`},
		{"1d1d", `"1d1d" is not a duration; use e.g. 15s, 10m, 720h or 30d (units: ms, s, m, h, d)`},
		{"-5s", `"-5s" is negative; use a positive duration, e.g. 15s, 10m, 720h or 30d`},
		{"200000d", `"200000d" is too long; the maximum is about 106751d`},
	} {
		t.Run("bad "+tc.in, func(t *testing.T) {
			_, err := ParseDuration(tc.in)
			require.Error(t, err)
			assert.Equal(t, tc.want, err.Error())
		})
	}
}

func TestParseByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		str  string
	}{
		{"1048576", 1 << 20, "1MiB"},
		{"64KiB", 64 << 10, "64KiB"},
		{"1MiB", 1 << 20, "1MiB"},
		{"2GiB", 2 << 30, "2GiB"},
		{"1TiB", 1 << 40, "1TiB"},
		{"10KB", 10000, "10000"},
		{"5MB", 5e6, "5000000"},
		{"1GB", 1e9, "1000000000"},
		{"100B", 100, "100"},
		{"1 mib", 1 << 20, "1MiB"},
		{"0", 0, "0"},
		{"1536", 1536, "1536"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			b, err := ParseByteSize(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, b.Int64())
			assert.Equal(t, tc.str, b.String())
			back, err := ParseByteSize(b.String())
			require.NoError(t, err)
			assert.Equal(t, b, back, "String must round-trip")
		})
	}
	for _, tc := range []struct{ in, want string }{
		{"12 apples", `"12 apples" is not a size; use e.g. 1048576, 64KiB or 1MiB`},
		{"MiB", `"MiB" is not a size; use e.g. 1048576, 64KiB or 1MiB`},
		{"1.5MiB", `"1.5MiB" is not a size; use e.g. 1048576, 64KiB or 1MiB`},
		{"-1", `"-1" is not a size; use e.g. 1048576, 64KiB or 1MiB`},
		{"", `"" is not a size; use e.g. 1048576, 64KiB or 1MiB`},
		{"9999999999TiB", `"9999999999TiB" is too large`},
	} {
		t.Run("bad "+tc.in, func(t *testing.T) {
			_, err := ParseByteSize(tc.in)
			require.Error(t, err)
			assert.Equal(t, tc.want, err.Error())
		})
	}
}
