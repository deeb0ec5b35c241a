package kubod_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anchorage-pin/anchorage/adapters/kubo/kubod"
	"github.com/anchorage-pin/anchorage/adapters/kubo/kubotest"
)

const helperEnv = "KUBOD_TEST_ORPHAN_REPO"

func init() {
	if os.Getenv(helperEnv) != "" {
		// Pin the main goroutine to the main thread, so the helper's other
		// goroutines never run on it: the runtime never terminates the main
		// thread (it parks it instead), which would hide a thread exit.
		runtime.LockOSThread()
	}
}

// TestDaemonDiesWithParent re-runs this test binary as a child that starts a
// daemon from a short-lived locked thread, churns OS threads, and is then
// SIGKILLed: the daemon must survive the thread exits (golang/go#27505:
// Pdeathsig fires when the forking thread exits) and die with the process.
func TestDaemonDiesWithParent(t *testing.T) {
	if repo := os.Getenv(helperEnv); repo != "" {
		orphanHelper(repo)
		return
	}
	cmd, sc, pid := startHelper(t, "TestDaemonDiesWithParent", helperEnv, nil)
	if !sc.Scan() || sc.Text() != "CHURNED" {
		t.Fatalf("helper: daemon did not survive thread churn (got %q)", sc.Text())
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("daemon %d gone before the parent died: %v", pid, err)
	}

	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for {
		// Reaped by init once it exits; until then it may linger as a zombie.
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) || isZombie(pid) {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("daemon %d still running 15s after its parent was killed", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startHelper re-runs this test binary as the helper of test (env names its repo dir, attr its process
// attributes), killed at the end of the test, and returns it, its output past the daemon's PID, and that PID.
func startHelper(t *testing.T, test, env string, attr *syscall.SysProcAttr) (*exec.Cmd, *bufio.Scanner, int) {
	t.Helper()
	bin := kubotest.Binary(t)
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), env+"="+t.TempDir(), kubod.EnvBinary+"="+bin)
	cmd.SysProcAttr = attr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "DAEMON-PID "); ok {
			if pid, _ := strconv.Atoi(s); pid > 0 {
				return cmd, sc, pid
			}
			break
		}
	}
	t.Fatal("helper did not report a daemon PID")
	return nil, nil, 0
}

func orphanHelper(repo string) {
	bin, err := kubod.EnsureBinary(context.Background(), kubod.BuildOptions{})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	// Call Start from a goroutine that is locked to its thread and then
	// exits, so the runtime destroys that thread: a Start that forked on the
	// caller's thread would lose its daemon here (golang/go#27505).
	var d *kubod.Daemon
	var wg sync.WaitGroup
	wg.Go(func() {
		runtime.LockOSThread()
		d, err = kubod.Start(context.Background(), kubod.Options{Binary: bin, RepoDir: repo, Logger: quiet})
	})
	wg.Wait()
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Printf("DAEMON-PID %d\n", d.PID())
	// More goroutines that exit while locked destroy more threads.
	for range 64 {
		wg.Go(func() { runtime.LockOSThread() })
	}
	wg.Wait()
	select {
	case <-d.Done():
		fmt.Println("DIED")
	case <-time.After(time.Second):
		fmt.Println("CHURNED")
	}
	time.Sleep(time.Hour) // until killed
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) S ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

const groupHelperEnv = "KUBOD_TEST_GROUP_REPO"

// TestDaemonKeepsOutOfTheParentsProcessGroup: a terminal's Ctrl-C signals the
// whole foreground process group. It must reach only the process that started
// the daemon (which stops its workers first, then the daemon), not the daemon
// too. A helper that ignores SIGINT starts a daemon in a process group of the
// helper's own; SIGINT to that group leaves the daemon running.
func TestDaemonKeepsOutOfTheParentsProcessGroup(t *testing.T) {
	if repo := os.Getenv(groupHelperEnv); repo != "" {
		groupHelper(repo)
		return
	}
	// The helper leads a process group, as a shell's job does.
	cmd, sc, pid := startHelper(t, "TestDaemonKeepsOutOfTheParentsProcessGroup", groupHelperEnv, &syscall.SysProcAttr{Setpgid: true})
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid == cmd.Process.Pid {
		t.Fatalf("daemon %d is in its parent's process group (%d, %v)", pid, pgid, err)
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if !sc.Scan() || sc.Text() != "ALIVE" {
		t.Fatalf("helper: the daemon stopped on its parent's group interrupt (got %q)", sc.Text())
	}
}

func groupHelper(repo string) {
	signal.Ignore(syscall.SIGINT)
	bin, err := kubod.EnsureBinary(context.Background(), kubod.BuildOptions{})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	d, err := kubod.Start(context.Background(), kubod.Options{Binary: bin, RepoDir: repo, Logger: quiet})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Printf("DAEMON-PID %d\n", d.PID())
	select {
	case <-d.Done():
		fmt.Println("DIED")
	case <-time.After(3 * time.Second):
		fmt.Println("ALIVE")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = d.Stop(ctx)
	time.Sleep(time.Hour) // until killed
}
