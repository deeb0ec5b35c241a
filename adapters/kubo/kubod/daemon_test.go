package kubod_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/kubo/kubod"
	"github.com/anchorage-pin/anchorage/adapters/kubo/kubotest"
)

var client = &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 30 * time.Second}

// rpc POSTs /api/v0/<cmd> with query args and an optional multipart file,
// decoding the JSON answer into out.
func rpc(t *testing.T, d *kubod.Daemon, cmd string, args url.Values, file []byte, out any) {
	t.Helper()
	var body io.Reader
	contentType := ""
	if file != nil {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		fw, err := mw.CreateFormFile("file", "block")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fw.Write(file)
		_ = mw.Close()
		body, contentType = &buf, mw.FormDataContentType()
	}
	req, err := http.NewRequest(http.MethodPost, d.APIURL()+"/api/v0/"+cmd+"?"+args.Encode(), body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: HTTP %d: %s", cmd, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s: decode %q: %v", cmd, raw, err)
		}
	}
}

func TestTwoDaemonsPinFromPeer(t *testing.T) {
	var a, b *kubod.Daemon
	var wg sync.WaitGroup
	kubotest.Binary(t) // build (if needed) before starting both in parallel
	wg.Go(func() { a = kubotest.Daemon(t) })
	wg.Go(func() { b = kubotest.Daemon(t) })
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if a.PeerID() == b.PeerID() {
		t.Fatalf("both daemons have peer ID %s", a.PeerID())
	}
	for _, d := range []*kubod.Daemon{a, b} {
		if !strings.HasPrefix(d.APIURL(), "http://127.0.0.1:") {
			t.Errorf("API URL %q is not loopback", d.APIURL())
		}
		if len(d.SwarmAddrs()) == 0 {
			t.Fatalf("daemon %s has no swarm addresses", d.PeerID())
		}
		for _, addr := range d.SwarmAddrs() {
			if !strings.HasPrefix(addr, "/ip4/127.0.0.1/tcp/") || !strings.HasSuffix(addr, "/p2p/"+d.PeerID()) {
				t.Errorf("swarm address %q is not loopback TCP ending in /p2p/%s", addr, d.PeerID())
			}
		}
	}

	data := fmt.Appendf(nil, "anchorage kubod test block %d", time.Now().UnixNano())
	var put struct{ Key string }
	rpc(t, a, "block/put", url.Values{"cid-codec": {"raw"}}, data, &put)
	if !strings.HasPrefix(put.Key, "bafk") {
		t.Fatalf("block/put returned %q, want a raw CIDv1", put.Key)
	}

	rpc(t, b, "swarm/connect", url.Values{"arg": {a.SwarmAddrs()[0]}}, nil, nil)

	var pinned struct{ Pins []string }
	rpc(t, b, "pin/add", url.Values{"arg": {put.Key}, "recursive": {"true"}}, nil, &pinned)
	if len(pinned.Pins) != 1 || pinned.Pins[0] != put.Key {
		t.Fatalf("pin/add pinned %v, want [%s]", pinned.Pins, put.Key)
	}

	var ls struct {
		Keys map[string]struct{ Type string }
	}
	rpc(t, b, "pin/ls", url.Values{"arg": {put.Key}, "type": {"recursive"}}, nil, &ls)
	if got := ls.Keys[put.Key].Type; got != "recursive" {
		t.Fatalf("pin/ls on B: %+v, want %s recursive", ls.Keys, put.Key)
	}

	// The block really travelled from A to B.
	req, _ := http.NewRequest(http.MethodPost, b.APIURL()+"/api/v0/block/get?arg="+put.Key, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, data) {
		t.Fatalf("block on B = %q, want %q", got, data)
	}
}

func TestConfigIsLoopbackOnly(t *testing.T) {
	d := kubotest.Daemon(t)
	for _, c := range []struct{ key, want string }{
		{"Routing.Type", `"none"`},
		{"Bootstrap", `[]`},
		{"Addresses.API", `"/ip4/127.0.0.1/tcp/0"`},
		{"Addresses.Gateway", `"/ip4/127.0.0.1/tcp/0"`},
		{"AutoConf.Enabled", `false`},
		{"AutoTLS.Enabled", `false`},
		{"Discovery.MDNS.Enabled", `false`},
		{"Swarm.DisableNatPortMap", `true`},
		{"Swarm.RelayClient.Enabled", `false`},
		{"Swarm.RelayService.Enabled", `false`},
		{"Plugins.Plugins.telemetry.Config.Mode", `"off"`},
	} {
		var out struct {
			Key   string
			Value json.RawMessage
		}
		rpc(t, d, "config", url.Values{"arg": {c.key}}, nil, &out)
		var compact bytes.Buffer
		_ = json.Compact(&compact, out.Value)
		if compact.String() != c.want {
			t.Errorf("config %s = %s, want %s", c.key, compact.String(), c.want)
		}
	}
	// The swarm listens on loopback only, on a port of its own that the next start keeps (TestRestartKeepsPeerID).
	var swarm struct{ Value []string }
	rpc(t, d, "config", url.Values{"arg": {"Addresses.Swarm"}}, nil, &swarm)
	if len(swarm.Value) != 1 || !strings.HasPrefix(swarm.Value[0], "/ip4/127.0.0.1/tcp/") || strings.HasSuffix(swarm.Value[0], "/tcp/0") {
		t.Errorf("config Addresses.Swarm = %q, want one loopback TCP address with a fixed port", swarm.Value)
	}
	// Kubo v0.43.0 `init` pins the empty directory even with --empty-repo
	// (cmd/ipfs/kubo/init.go: pinEmptyDir); nothing else is pinned.
	const emptyDir = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
	var pins struct{ Keys map[string]any }
	rpc(t, d, "pin/ls", nil, nil, &pins)
	if _, ok := pins.Keys[emptyDir]; len(pins.Keys) > 1 || (len(pins.Keys) == 1 && !ok) {
		t.Errorf("fresh repo has pins %v, want at most the empty directory", pins.Keys)
	}
}

func TestExtraConfig(t *testing.T) {
	d := kubotest.Start(t, kubod.Options{
		RepoDir:     t.TempDir(),
		ExtraConfig: map[string]any{"Datastore.StorageMax": "1GB", "Swarm.ConnMgr.HighWater": 7},
	})
	var out struct{ Value any }
	rpc(t, d, "config", url.Values{"arg": {"Swarm.ConnMgr.HighWater"}}, nil, &out)
	if out.Value != float64(7) {
		t.Errorf("Swarm.ConnMgr.HighWater = %v, want 7", out.Value)
	}
	rpc(t, d, "config", url.Values{"arg": {"Datastore.StorageMax"}}, nil, &out)
	if out.Value != "1GB" {
		t.Errorf("Datastore.StorageMax = %v, want 1GB", out.Value)
	}
}

func TestRestartKeepsPeerID(t *testing.T) {
	bin := kubotest.Binary(t)
	repo := t.TempDir()
	ctx := context.Background()
	d1, err := kubod.Start(ctx, kubod.Options{Binary: bin, RepoDir: repo, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	id, api1, swarm1 := d1.PeerID(), d1.APIURL(), d1.SwarmAddrs()
	if err := d1.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(repo, "config")); err != nil {
		t.Fatalf("repo gone after Stop: %v", err)
	}
	// A clean shutdown removes the api file.
	if _, err := os.Stat(filepath.Join(repo, "api")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("api file still there after Stop (unclean shutdown?): %v\n%s", err, d1.Logs())
	}

	d2 := kubotest.Start(t, kubod.Options{Binary: bin, RepoDir: repo})
	if d2.PeerID() != id {
		t.Fatalf("peer ID after restart = %s, want %s", d2.PeerID(), id)
	}
	if d2.RepoDir() != repo {
		t.Errorf("RepoDir = %q, want %q", d2.RepoDir(), repo)
	}
	// And its swarm address: it is what the node registers and hands clients as a delegate.
	if got := d2.SwarmAddrs(); strings.Join(got, " ") != strings.Join(swarm1, " ") {
		t.Errorf("swarm addresses after restart = %q, want %q", got, swarm1)
	}
	var out struct{ ID string }
	rpc(t, d2, "id", nil, nil, &out)
	if out.ID != id {
		t.Fatalf("id after restart = %s, want %s", out.ID, id)
	}
	t.Logf("api before %s, after %s", api1, d2.APIURL())
}

// TestRestartAfterCrash restarts on a repo whose daemon was SIGKILLed, leaving
// a stale api file behind.
func TestRestartAfterCrash(t *testing.T) {
	bin := kubotest.Binary(t)
	repo := t.TempDir()
	ctx := context.Background()
	d1, err := kubod.Start(ctx, kubod.Options{Binary: bin, RepoDir: repo, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(d1.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d1.Done()
	if err := d1.Stop(ctx); err == nil || !strings.Contains(err.Error(), "exited unexpectedly") {
		t.Errorf("Stop after a crash = %v, want an unexpected-exit error", err)
	}
	if _, err := os.Stat(filepath.Join(repo, "api")); err != nil {
		t.Logf("no stale api file after SIGKILL (%v)", err)
	}

	d2 := kubotest.Start(t, kubod.Options{Binary: bin, RepoDir: repo})
	if d2.PeerID() != d1.PeerID() {
		t.Fatalf("peer ID after crash restart = %s, want %s", d2.PeerID(), d1.PeerID())
	}
	if d2.APIURL() == d1.APIURL() {
		t.Logf("same API URL reused: %s", d2.APIURL())
	}
	var out struct{ ID string }
	rpc(t, d2, "id", nil, nil, &out)
	if out.ID != d1.PeerID() {
		t.Fatalf("id = %s, want %s", out.ID, d1.PeerID())
	}
}

func TestStopIsIdempotent(t *testing.T) {
	bin := kubotest.Binary(t)
	ctx := context.Background()
	d, err := kubod.Start(ctx, kubod.Options{Binary: bin, Logger: quiet}) // temporary repo
	if err != nil {
		t.Fatal(err)
	}
	repo, pid, api := d.RepoDir(), d.PID(), d.APIURL()

	select {
	case <-d.Done():
		t.Fatal("Done closed before Stop")
	default:
	}

	var wg sync.WaitGroup
	errs := make([]error, 3)
	start := time.Now()
	for i := range errs {
		wg.Go(func() { errs[i] = d.Stop(ctx) })
	}
	wg.Wait()
	t.Logf("stop took %v", time.Since(start))
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Stop %d: %v", i, err)
		}
	}
	if err := d.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	select {
	case <-d.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) = %v, want ESRCH: process still exists", pid, err)
	}
	if _, err := client.Post(api+"/api/v0/id", "", nil); err == nil {
		t.Errorf("API %s still answers after Stop", api)
	}
	if _, err := os.Stat(repo); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary repo %s not removed: %v", repo, err)
	}
}

func TestStartRefusesRepoInUse(t *testing.T) {
	bin := kubotest.Binary(t)
	repo := t.TempDir()
	d := kubotest.Start(t, kubod.Options{Binary: bin, RepoDir: repo})
	_, err := kubod.Start(context.Background(), kubod.Options{Binary: bin, RepoDir: repo})
	if err == nil || !strings.Contains(err.Error(), "in use by a running daemon") {
		t.Fatalf("second Start on a served repo: %v, want an in-use error", err)
	}
	// The first daemon is unaffected.
	var out struct{ ID string }
	rpc(t, d, "id", nil, nil, &out)
	if out.ID != d.PeerID() {
		t.Errorf("first daemon answers id %s, want %s", out.ID, d.PeerID())
	}
}

func TestStartFailureReportsLogTail(t *testing.T) {
	bin := kubotest.Binary(t)
	// An unparsable listen address makes the daemon exit during startup.
	_, err := kubod.Start(context.Background(), kubod.Options{
		Binary:      bin,
		RepoDir:     t.TempDir(),
		Logger:      quiet,
		ExtraConfig: map[string]any{"Addresses.API": "/not/a/multiaddr"},
	})
	if err == nil {
		t.Fatal("daemon with a broken API address started")
	}
	for _, want := range []string{"exited during startup", "--- daemon output ---", "Kubo version: 0.43.0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
