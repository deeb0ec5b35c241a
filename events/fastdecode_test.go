package events

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sameAsSlow checks that whenever the fast decoder accepts body, it decodes it exactly as encoding/json does.
func sameAsSlow(t *testing.T, body []byte) (fast bool) {
	t.Helper()
	env, ev, ok := fastUnmarshal(body, false)
	if !ok {
		return false
	}
	senv, sev, err := slowUnmarshal(body)
	if err != nil {
		t.Fatalf("fast decoder accepted what encoding/json refuses (%v):\n%s", err, body)
	}
	if !reflect.DeepEqual(env, senv) || !reflect.DeepEqual(ev, sev) {
		t.Fatalf("fast decoder differs on\n%s\nfast: %#v %#v\nslow: %#v %#v", body, env, ev, senv, sev)
	}
	// Shared strings: the same result, and none of it aliases the caller's buffer.
	buf := bytes.Clone(body)
	tenv, tev, ok := fastUnmarshal(buf, true)
	for i := range buf {
		buf[i] = 'x'
	}
	if !ok || !reflect.DeepEqual(tenv, senv) || !reflect.DeepEqual(tev, sev) {
		t.Fatalf("fast decoder with shared strings differs on\n%s\nfast: %#v %#v\nslow: %#v %#v", body, tenv, tev, senv, sev)
	}
	// Owned body: the same result; only Data is a part of body.
	buf = bytes.Clone(body)
	oenv, oev, ok := fastUnmarshalSharing(buf, shareBody)
	if !ok || !reflect.DeepEqual(oenv, senv) || !reflect.DeepEqual(oev, sev) {
		t.Fatalf("fast decoder with an owned body differs on\n%s\nfast: %#v %#v\nslow: %#v %#v", body, oenv, oev, senv, sev)
	}
	if len(oenv.Data) > 0 && cap(oenv.Data) != len(oenv.Data) {
		t.Fatalf("Data of an owned body can grow into the rest of it: len %d cap %d", len(oenv.Data), cap(oenv.Data))
	}
	// Decode of the payload alone too.
	dev, ok := fastDecode(env.Type, env.Version, env.Data)
	if !ok || !reflect.DeepEqual(dev, sev) {
		t.Fatalf("fastDecode differs on %s: %#v, %v", env.Data, dev, ok)
	}
	return true
}

func goldenBodies(t testing.TB) map[string][]byte {
	ents, err := os.ReadDir("testdata/golden")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("testdata/golden", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func TestFastDecodeMatches(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 2, 8, 15, 4, 120934512, time.UTC)
	var bodies [][]byte
	for _, e := range []Event{
		PinRequested{OrgID: "o", RequestID: "r", CID: "bafy", Created: at},
		PinRequested{OrgID: "o", RequestID: "r", CID: "bafy", Name: "naïve \"quoted\" \\ \u2028 <&>", Origins: []string{"/ip4/1.2.3.4/tcp/1"},
			Meta: map[string]string{"a": "b", "é\n": "\x01"}, Replaces: "x", Created: at},
		PinPlaced{OrgID: "o", RequestID: "r", NodeID: "n", CID: "c", Origins: []string{"a", "b"}, Term: 1 << 40, MovedFrom: "m"},
		PinStatusObserved{OrgID: "o", RequestID: "r", NodeID: "n", CID: "c", Status: "failed", Info: map[string]string{"status_details": "x"}, PlacedSeq: 12},
		PinRemoved{OrgID: "o", RequestID: "r"},
		PinReplaced{OrgID: "o", RequestID: "r", ReplacedBy: "s"},
		PinUnplaced{OrgID: "o", RequestID: "r", NodeID: "n", CID: "c", Reason: "moved", Term: 3},
	} {
		env, err := New("id", at, "token:t", "corr", e)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, b)
	}
	for _, b := range bodies {
		if !sameAsSlow(t, b) {
			t.Errorf("fast decoder gave up on what Marshal writes: %s", b)
		}
	}
	for name, b := range goldenBodies(t) {
		fast := sameAsSlow(t, b)
		if strings.HasPrefix(name, "pin.") && !fast {
			t.Errorf("fast decoder gave up on golden %s", name)
		}
	}
	// Documents it must either decode exactly or leave to encoding/json.
	for _, s := range []string{
		`{"id":"a","type":"pin.removed","v":1,"at":"2026-01-01T00:00:00Z","actor":"x","data":{"org_id":"o","request_id":"r"}}`,
		` { "id" : "a" , "type":"pin.removed","v":1,"at":"2026-01-01T00:00:00+02:00","actor":"x","data": {"org_id" : "o" , "request_id":"r" } } `,
		`{"type":"pin.removed","v":1,"data":{}}`,
		`{"type":"pin.removed","v":1,"data":{"org_id":"o","org_id":"p"}}`,
		`{"type":"pin.removed","v":1,"data":{"ORG_ID":"o"}}`,
		`{"type":"pin.removed","v":1,"data":{"org_id":"o","extra":1}}`,
		`{"type":"pin.removed","v":1,"data":{"org_id":null}}`,
		`{"type":"pin.removed","v":1,"data":null}`,
		`{"type":"pin.removed","v":1,"data":{"org_id":"o"}} x`,
		`{"type":"pin.removed","v":1,"data":{"org_id":"o",}}`,
		`{"type":"pin.removed","v":1,"data":{"org_id":"o\u0000\ud800"}}`,
		`{"type":"pin.removed","v":1,"data":{"org_id":"` + "\xff" + `"}}`,
		`{"data":{"org_id":"o"},"type":"pin.removed","v":1}`,
		`{"type":"pin.removed","v":01,"data":{}}`,
		`{"type":"pin.removed","v":1.0,"data":{}}`,
		`{"type":"pin.removed","v":-1,"data":{}}`,
		`{"type":"pin.placed","v":1,"data":{"term":-1}}`,
		`{"type":"pin.placed","v":1,"data":{"term":18446744073709551615}}`,
		`{"type":"pin.placed","v":1,"data":{"origins":[]}}`,
		`{"type":"pin.placed","v":1,"data":{"origins":["a",]}}`,
		`{"type":"pin.requested","v":1,"data":{"meta":{}}}`,
		`{"type":"pin.requested","v":1,"data":{"meta":{"a":"1","a":"2"}}}`,
		`{"type":"pin.requested","v":1,"data":{"meta":{"a":1}}}`,
		`{"type":"pin.requested","v":1,"data":{"created":"2026-13-01T00:00:00Z"}}`,
		`{"type":"pin.requested","v":1,"data":{"created":"2026-01-01T00:00:00.123456789123Z"}}`,
		`{"type":"pin.requested","v":1,"at":"not a time","data":{}}`,
		`{"type":"org.created","v":1,"data":{"org_id":"o","slug":"s"}}`,
		`{"type":"pin.removed","v":2,"data":{}}`,
		`{"id":"\u00e9","type":"pin.removed","v":1,"data":{"org_id":"\t"}}`,
	} {
		sameAsSlow(t, []byte(s))
	}
}

// UnmarshalOwned decodes as Unmarshal does, on the fast path and off it.
func TestUnmarshalOwned(t *testing.T) {
	bodies := goldenBodies(t)
	bodies["slow"] = []byte(`{"data":{"org_id":"o","request_id":"r"},"type":"pin.removed","v":1,"id":"i"}`)
	for name, body := range bodies {
		env, ev, err := Unmarshal(body)
		oenv, oev, oerr := UnmarshalOwned(bytes.Clone(body))
		if (err == nil) != (oerr == nil) || !reflect.DeepEqual(env, oenv) || !reflect.DeepEqual(ev, oev) {
			t.Fatalf("%s: UnmarshalOwned gives %#v %#v %v, Unmarshal %#v %#v %v", name, oenv, oev, oerr, env, ev, err)
		}
	}
}

func FuzzFastDecode(f *testing.F) {
	for _, b := range goldenBodies(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		sameAsSlow(t, body)
	})
}

func BenchmarkUnmarshal(b *testing.B) {
	for name, body := range goldenBodies(b) {
		if !strings.HasPrefix(name, "pin.") {
			continue
		}
		b.Run(strings.TrimSuffix(name, ".json")+"/fast", func(b *testing.B) {
			for b.Loop() {
				if _, _, err := Unmarshal(body); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(strings.TrimSuffix(name, ".json")+"/transient", func(b *testing.B) {
			for b.Loop() {
				if _, _, err := UnmarshalTransient(body); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(strings.TrimSuffix(name, ".json")+"/owned", func(b *testing.B) {
			for b.Loop() {
				if _, _, err := UnmarshalOwned(body); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(strings.TrimSuffix(name, ".json")+"/encoding-json", func(b *testing.B) {
			for b.Loop() {
				if _, _, err := slowUnmarshal(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
