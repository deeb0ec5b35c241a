package events_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/events"
)

// Adding an event type or version: write testdata/golden/<type>.v<N>.json, then run
//
//	go test ./events -run TestGoldenSums -update-sums
//
// which appends the new file's hash to SHA256SUMS. It never rewrites a listed hash: a released golden file is a
// wire contract, and changing it means adding a new version instead.
var updateSums = flag.Bool("update-sums", false, "append missing golden files to testdata/golden/SHA256SUMS (never rewrites listed ones)")

const (
	goldenDir = "testdata/golden"
	sumsFile  = "SHA256SUMS"
)

// goldenName is "<type>.v<N>.json" with type "<aggregate>.<past-tense verb>" in lower snake case.
var goldenName = regexp.MustCompile(`^([a-z][a-z_]*\.[a-z][a-z_]*)\.v([1-9][0-9]*)\.json$`)

// goldenFiles lists the golden JSON files of dir by their "type.vN" key, and any file that has no business there.
func goldenFiles(dir string) (keys []string, stray []string, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range ents {
		switch {
		case e.Name() == sumsFile:
		case !e.IsDir() && goldenName.MatchString(e.Name()):
			keys = append(keys, strings.TrimSuffix(e.Name(), ".json"))
		default:
			stray = append(stray, e.Name())
		}
	}
	return keys, stray, nil
}

// coverageProblems compares the registered (type, version) pairs with the golden files present.
func coverageProblems(registered, golden []string) []string {
	var out []string
	for _, r := range registered {
		if !slices.Contains(golden, r) {
			out = append(out, fmt.Sprintf("%s is registered but has no golden file %s/%s.json: write one with every field set", r, goldenDir, r))
		}
	}
	for _, g := range golden {
		if !slices.Contains(registered, g) {
			out = append(out, fmt.Sprintf("golden file %s.json names no registered event type: register it in events or remove the file", g))
		}
	}
	return out
}

func TestGoldenCoverage(t *testing.T) {
	t.Parallel()
	keys, stray, err := goldenFiles(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stray {
		t.Errorf("%s/%s is not a golden file: name golden files <type>.v<N>.json", goldenDir, s)
	}
	reg := events.Registered()
	if len(reg) == 0 {
		t.Fatal("no event types are registered")
	}
	if !slices.IsSorted(reg) {
		t.Errorf("Registered() is not sorted: %v", reg)
	}
	for _, r := range reg {
		if !goldenName.MatchString(r + ".json") {
			t.Errorf("registered type %q does not follow <aggregate>.<past_tense_verb>.v<N>", r)
		}
	}
	for _, p := range coverageProblems(reg, keys) {
		t.Error(p)
	}
}

func TestCoverageProblems(t *testing.T) {
	t.Parallel()
	if p := coverageProblems([]string{"a.x.v1", "a.y.v1"}, []string{"a.x.v1", "a.y.v1"}); len(p) != 0 {
		t.Errorf("matching sets: %v", p)
	}
	p := coverageProblems([]string{"a.x.v1", "a.x.v2"}, []string{"a.x.v1", "b.z.v1"})
	if len(p) != 2 || !strings.Contains(p[0], "a.x.v2 is registered but has no golden file") ||
		!strings.Contains(p[1], "b.z.v1.json names no registered event type") {
		t.Errorf("problems = %q", p)
	}
}

// encodeGolden renders an event the way the golden files hold it: events.New, events.Marshal, 2-space indent,
// trailing newline.
func encodeGolden(env events.Envelope, ev events.Event) ([]byte, error) {
	fresh, err := events.New(env.ID, env.At, env.Actor, env.Corr, ev)
	if err != nil {
		return nil, err
	}
	body, err := events.Marshal(fresh)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, body, "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// zeroFields names every field of v (a struct) that is zero, or an empty or zero-holding slice or map.
func zeroFields(v reflect.Value) []string {
	var out []string
	for i := 0; i < v.NumField(); i++ {
		f, ft := v.Field(i), v.Type().Field(i)
		if !ft.IsExported() {
			continue
		}
		name := ft.Name
		if tag, _, _ := strings.Cut(ft.Tag.Get("json"), ","); tag != "" {
			name = tag
		}
		if f.IsZero() {
			out = append(out, name)
			continue
		}
		switch f.Kind() {
		case reflect.Slice, reflect.Map:
			if f.Len() == 0 {
				out = append(out, name+" (empty)")
			}
			if f.Kind() == reflect.Slice {
				for j := 0; j < f.Len(); j++ {
					if f.Index(j).IsZero() {
						out = append(out, fmt.Sprintf("%s[%d]", name, j))
					}
				}
			} else {
				for it := f.MapRange(); it.Next(); {
					if it.Key().IsZero() || it.Value().IsZero() {
						out = append(out, fmt.Sprintf("%s[%v]", name, it.Key()))
					}
				}
			}
		}
	}
	return out
}

func TestGoldenDecodeAndReencode(t *testing.T) {
	t.Parallel()
	keys, _, err := goldenFiles(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("no golden files")
	}
	for _, k := range keys {
		t.Run(k, func(t *testing.T) {
			t.Parallel()
			m := goldenName.FindStringSubmatch(k + ".json")
			wantType, wantVersion := events.Type(m[1]), 0
			fmt.Sscan(m[2], &wantVersion)

			raw, err := os.ReadFile(filepath.Join(goldenDir, k+".json"))
			if err != nil {
				t.Fatal(err)
			}
			env, ev, err := events.Unmarshal(raw)
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if env.Type != wantType || env.Version != wantVersion {
				t.Fatalf("envelope says %s v%d, file name says %s v%d", env.Type, env.Version, wantType, wantVersion)
			}
			if ev.EventType() != wantType || ev.EventVersion() != wantVersion {
				t.Fatalf("decoded %T, which is %s v%d", ev, ev.EventType(), ev.EventVersion())
			}
			rv := reflect.ValueOf(ev)
			if rv.Kind() != reflect.Struct {
				t.Fatalf("decoded %T; payloads are struct values", ev)
			}

			envCopy := env
			envCopy.Data = nil
			if z := zeroFields(reflect.ValueOf(envCopy)); len(z) != 1 || z[0] != "data" {
				t.Errorf("envelope fields not set: %v (a golden envelope sets every field)", z)
			}
			if len(env.Data) == 0 {
				t.Error("envelope has no data")
			}
			if env.At.Location() != time.UTC {
				t.Errorf("at %v is not UTC", env.At)
			}
			if z := zeroFields(rv); len(z) > 0 {
				t.Errorf("%T fields not set: %v (a golden file sets every field to a realistic value)", ev, z)
			}

			// Strict: the file carries no field the Go type does not know.
			strict := reflect.New(rv.Type())
			dec := json.NewDecoder(bytes.NewReader(env.Data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(strict.Interface()); err != nil {
				t.Errorf("data has fields %T does not declare: %v", ev, err)
			}

			again, err := encodeGolden(env, ev)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, raw) {
				t.Errorf("re-encoding does not reproduce the file byte for byte:\n--- file\n%s\n--- re-encoded\n%s", raw, again)
			}
		})
	}
}

// sumEntry is one line of a sha256sum file.
type sumEntry struct {
	sum, name string
}

func parseSums(b []byte) ([]sumEntry, error) {
	var out []sumEntry
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		sum, name, ok := strings.Cut(line, " ")
		name = strings.TrimPrefix(strings.TrimPrefix(name, " "), "*")
		if _, err := hex.DecodeString(sum); !ok || err != nil || len(sum) != 64 || name == "" {
			return nil, fmt.Errorf("%s line %d: %q is not \"<sha256 hex>  <file>\"", sumsFile, n, line)
		}
		if seen[name] {
			return nil, fmt.Errorf("%s line %d: %s is listed twice", sumsFile, n, name)
		}
		seen[name] = true
		out = append(out, sumEntry{strings.ToLower(sum), name})
	}
	return out, sc.Err()
}

// checkSums verifies dir's golden files against dir/SHA256SUMS. With update it appends entries for unlisted
// files; it never touches listed ones.
func checkSums(dir string, update bool) []string {
	var problems []string
	sumsPath := filepath.Join(dir, sumsFile)
	b, err := os.ReadFile(sumsPath)
	if err != nil && !(errors.Is(err, os.ErrNotExist) && update) {
		return []string{err.Error()}
	}
	listed, err := parseSums(b)
	if err != nil {
		return []string{err.Error()}
	}
	byName := map[string]string{}
	for _, e := range listed {
		byName[e.name] = e.sum
		content, err := os.ReadFile(filepath.Join(dir, e.name))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s is listed in %s but cannot be read (%v): released golden files must never be removed", e.name, sumsFile, err))
			continue
		}
		if got := sha256.Sum256(content); hex.EncodeToString(got[:]) != e.sum {
			problems = append(problems, fmt.Sprintf("%s changed (sha256 %x, %s lists %s): golden files are a released wire contract and must never be edited; add a new version instead",
				e.name, got, sumsFile, e.sum))
		}
	}
	keys, _, err := goldenFiles(dir)
	if err != nil {
		return append(problems, err.Error())
	}
	var added []string
	for _, k := range keys {
		name := k + ".json"
		if _, ok := byName[name]; ok {
			continue
		}
		if !update {
			problems = append(problems, fmt.Sprintf("%s is not listed in %s: add it to SHA256SUMS (go test ./events -run TestGoldenSums -update-sums)", name, sumsFile))
			continue
		}
		content, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return append(problems, err.Error())
		}
		added = append(added, fmt.Sprintf("%x  %s\n", sha256.Sum256(content), name))
	}
	if len(added) > 0 {
		if len(b) > 0 && b[len(b)-1] != '\n' {
			b = append(b, '\n')
		}
		for _, a := range added {
			b = append(b, a...)
		}
		if err := os.WriteFile(sumsPath, b, 0o644); err != nil {
			return append(problems, err.Error())
		}
	}
	return problems
}

func TestGoldenSums(t *testing.T) {
	// Not parallel: with -update-sums it writes SHA256SUMS.
	for _, p := range checkSums(goldenDir, *updateSums) {
		t.Error(p)
	}
}

// TestCheckSums exercises the immutability check on a copy of the golden files.
func TestCheckSums(t *testing.T) {
	t.Parallel()
	keys, _, err := goldenFiles(goldenDir)
	if err != nil || len(keys) < 2 {
		t.Fatalf("need two golden files: %v %v", keys, err)
	}
	first, second := keys[0]+".json", keys[1]+".json"
	// copyGolden copies the golden dir, SHA256SUMS included.
	copyGolden := func(t *testing.T) string {
		dir := t.TempDir()
		ents, err := os.ReadDir(goldenDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(goldenDir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	one := func(t *testing.T, problems []string, want string) {
		t.Helper()
		if len(problems) != 1 || !strings.Contains(problems[0], want) {
			t.Fatalf("problems = %q, want one containing %q", problems, want)
		}
	}

	t.Run("clean copy passes", func(t *testing.T) {
		if p := checkSums(copyGolden(t), false); len(p) != 0 {
			t.Fatal(p)
		}
	})
	t.Run("edited file fails even with update", func(t *testing.T) {
		dir := copyGolden(t)
		path := filepath.Join(dir, first)
		b, _ := os.ReadFile(path)
		if err := os.WriteFile(path, bytes.Replace(b, []byte(`"v": 1`), []byte(`"v": 1 `), 1), 0o644); err != nil {
			t.Fatal(err)
		}
		sumsBefore, _ := os.ReadFile(filepath.Join(dir, sumsFile))
		for _, update := range []bool{false, true} {
			one(t, checkSums(dir, update), "golden files are a released wire contract and must never be edited; add a new version instead")
		}
		if sumsAfter, _ := os.ReadFile(filepath.Join(dir, sumsFile)); !bytes.Equal(sumsBefore, sumsAfter) {
			t.Fatal("update rewrote SHA256SUMS")
		}
	})
	t.Run("removed file fails", func(t *testing.T) {
		dir := copyGolden(t)
		if err := os.Remove(filepath.Join(dir, first)); err != nil {
			t.Fatal(err)
		}
		one(t, checkSums(dir, true), "must never be removed")
	})
	t.Run("unlisted file fails, update appends it only", func(t *testing.T) {
		dir := copyGolden(t)
		sums, _ := os.ReadFile(filepath.Join(dir, sumsFile))
		var kept []string
		for _, l := range strings.SplitAfter(string(sums), "\n") {
			if !strings.HasSuffix(strings.TrimSpace(l), "  "+second) {
				kept = append(kept, l)
			}
		}
		trimmed := strings.Join(kept, "")
		if err := os.WriteFile(filepath.Join(dir, sumsFile), []byte(trimmed), 0o644); err != nil {
			t.Fatal(err)
		}
		one(t, checkSums(dir, false), second+" is not listed in SHA256SUMS: add it to SHA256SUMS")
		if p := checkSums(dir, true); len(p) != 0 {
			t.Fatal(p)
		}
		after, _ := os.ReadFile(filepath.Join(dir, sumsFile))
		if !strings.HasPrefix(string(after), trimmed) {
			t.Fatal("update rewrote existing entries")
		}
		content, _ := os.ReadFile(filepath.Join(dir, second))
		if want := fmt.Sprintf("%x  %s\n", sha256.Sum256(content), second); string(after) != trimmed+want {
			t.Fatalf("after update:\n%s\nwant appended %q", after, want)
		}
		if p := checkSums(dir, false); len(p) != 0 {
			t.Fatal(p)
		}
	})
	t.Run("malformed or duplicate lines fail", func(t *testing.T) {
		for _, sums := range []string{
			"not a sum line\n",
			strings.Repeat("a", 63) + "  " + first + "\n",
			strings.Repeat("0", 64) + "  " + first + "\n" + strings.Repeat("0", 64) + "  " + first + "\n",
		} {
			dir := copyGolden(t)
			if err := os.WriteFile(filepath.Join(dir, sumsFile), []byte(sums), 0o644); err != nil {
				t.Fatal(err)
			}
			if p := checkSums(dir, true); len(p) == 0 {
				t.Errorf("%q accepted", sums)
			}
		}
	})
}

// TestDecodeToleratesUnknownFields: a newer writer may add fields to the envelope and to a payload; this build
// must still decode what it knows.
func TestDecodeToleratesUnknownFields(t *testing.T) {
	t.Parallel()
	keys, _, err := goldenFiles(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		raw, err := os.ReadFile(filepath.Join(goldenDir, k+".json"))
		if err != nil {
			t.Fatal(err)
		}
		wantEnv, wantEv, err := events.Unmarshal(raw)
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			t.Fatal(err)
		}
		var data map[string]json.RawMessage
		if err := json.Unmarshal(obj["data"], &data); err != nil {
			t.Fatal(err)
		}
		data["added_in_a_later_release"] = json.RawMessage(`{"nested":[1,2,3]}`)
		data["another"] = json.RawMessage(`"x"`)
		obj["data"], _ = json.Marshal(data)
		obj["trace_id"] = json.RawMessage(`"4bf92f3577b34da6a3ce929d0e0e4736"`)
		obj["node"] = json.RawMessage(`{"id":"ams-1"}`)
		body, _ := json.Marshal(obj)

		env, ev, err := events.Unmarshal(body)
		if err != nil {
			t.Errorf("%s with unknown fields: %v", k, err)
			continue
		}
		if !reflect.DeepEqual(ev, wantEv) {
			t.Errorf("%s with unknown fields decoded to %+v, want %+v", k, ev, wantEv)
		}
		if env.ID != wantEnv.ID || env.Type != wantEnv.Type || env.Version != wantEnv.Version || !env.At.Equal(wantEnv.At) ||
			env.Actor != wantEnv.Actor || env.Corr != wantEnv.Corr {
			t.Errorf("%s envelope with unknown fields = %+v, want %+v", k, env, wantEnv)
		}
	}
}

func TestDecodeRejectsUnknownTypeOrVersion(t *testing.T) {
	t.Parallel()
	body := func(typ string, v int) []byte {
		return fmt.Appendf(nil, `{"id":"019cebcb-f376-773c-a3d3-4f89dda1494c","type":%q,"v":%d,"at":"2026-03-14T10:02:17.846Z","actor":"system:test","data":{"org_id":"e7031246-2fa0-557c-adce-49cf9034dd55"}}`, typ, v)
	}
	for _, tc := range []struct {
		typ string
		v   int
	}{
		{"pin.teleported", 1},
		{"pin.requested", 0},
		{"pin.requested", 99},
		{"org.created", -1},
		{"", 1},
		{"PIN.REQUESTED", 1},
	} {
		env, ev, err := events.Unmarshal(body(tc.typ, tc.v))
		if !errors.Is(err, events.ErrUnknownType) {
			t.Errorf("Unmarshal %s v%d: err = %v, want ErrUnknownType", tc.typ, tc.v, err)
		}
		if ev != nil {
			t.Errorf("Unmarshal %s v%d: event %#v, want nil", tc.typ, tc.v, ev)
		}
		if env.Type != events.Type(tc.typ) || env.Version != tc.v || env.ID == "" {
			t.Errorf("Unmarshal %s v%d: the envelope should still be returned, got %+v", tc.typ, tc.v, env)
		}
		if _, err := events.Decode(events.Type(tc.typ), tc.v, []byte(`{}`)); !errors.Is(err, events.ErrUnknownType) {
			t.Errorf("Decode %s v%d: err = %v, want ErrUnknownType", tc.typ, tc.v, err)
		}
	}

	// Known type, broken payload or envelope: an error, but not ErrUnknownType.
	for _, b := range []string{
		`{"id":"x","type":"pin.removed","v":1,"at":"2026-03-14T10:02:17Z","actor":"a","data":{"org_id":42}}`,
		`{"id":"x","type":"pin.removed","v":1,"at":"2026-03-14T10:02:17Z","actor":"a"}`,
		`{"id":"x","type":"pin.removed","v":"1"}`,
		`not json`,
	} {
		if _, _, err := events.Unmarshal([]byte(b)); err == nil || errors.Is(err, events.ErrUnknownType) {
			t.Errorf("Unmarshal %s: err = %v, want a decode error", b, err)
		}
	}
}

func TestNewNormalisesAndRoundTrips(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 14, 11, 2, 17, 846240918, time.FixedZone("CET", 3600))
	ev := events.PinRemoved{OrgID: "e7031246-2fa0-557c-adce-49cf9034dd55", RequestID: "019cebcb-f375-76f0-8478-82e36b0d549b"}
	env, err := events.New("019cebd8-31ba-7773-a080-78af73ab4876", at, "token:t", "", ev)
	if err != nil {
		t.Fatal(err)
	}
	if env.At.Location() != time.UTC || !env.At.Equal(at) {
		t.Errorf("At = %v, want %v in UTC", env.At, at)
	}
	if env.Type != "pin.removed" || env.Version != 1 {
		t.Errorf("type %s v%d", env.Type, env.Version)
	}
	body, err := events.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(body, []byte(`"corr"`)) {
		t.Errorf("an empty corr is omitted: %s", body)
	}
	gotEnv, gotEv, err := events.Unmarshal(body)
	if err != nil {
		t.Fatal(err)
	}
	if gotEv != ev || gotEnv.ID != env.ID || !gotEnv.At.Equal(at) || gotEnv.Actor != "token:t" {
		t.Errorf("round trip: %+v %+v", gotEnv, gotEv)
	}
}

// TestCatalogue: docs/events.md has a section for every registered event type, showing its golden file verbatim.
func TestCatalogue(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range events.Registered() {
		i := strings.LastIndex(r, ".v")
		heading := fmt.Sprintf("\n### %s v%s\n", r[:i], r[i+2:])
		start := bytes.Index(doc, []byte(heading))
		if start < 0 {
			t.Errorf("docs/events.md has no section %q", strings.TrimSpace(heading))
			continue
		}
		section := doc[start+len(heading):]
		if end := bytes.Index(section, []byte("\n#")); end >= 0 {
			section = section[:end]
		}
		golden, err := os.ReadFile(filepath.Join(goldenDir, r+".json"))
		if err != nil {
			continue // TestGoldenCoverage reports it
		}
		if !bytes.Contains(section, append(append([]byte("```json\n"), golden...), "```"...)) {
			t.Errorf("section %s of docs/events.md does not show %s/%s.json verbatim in a json block", r, goldenDir, r)
		}
		var env struct {
			Data map[string]json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(golden, &env); err != nil {
			t.Fatal(err)
		}
		for field := range env.Data {
			if !bytes.Contains(section, []byte("\n| `"+field+"` |")) {
				t.Errorf("section %s of docs/events.md does not describe field %q", r, field)
			}
		}
	}
}
