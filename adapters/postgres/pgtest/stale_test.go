package pgtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRemoveStaleClusterDirs(t *testing.T) {
	root := t.TempDir()
	mk := func(name string, owner int) string {
		d := filepath.Join(root, clusterDirPrefix+name)
		require.NoError(t, os.MkdirAll(filepath.Join(d, "data"), 0o700))
		if owner != 0 {
			require.NoError(t, os.WriteFile(filepath.Join(d, ownerFile), []byte(strconv.Itoa(owner)), 0o644))
		}
		return d
	}
	// A pid that is certainly gone: a child we already reaped.
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	deadPid := cmd.Process.Pid

	dead := mk("dead", deadPid)
	live := mk("live", os.Getpid())
	fresh := mk("fresh", 0) // being created right now: no owner.pid yet
	serverAlive := mk("server", deadPid)
	require.NoError(t, os.WriteFile(filepath.Join(serverAlive, "data", "postmaster.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600))
	unrelated := filepath.Join(root, "something-else")
	require.NoError(t, os.Mkdir(unrelated, 0o700))

	removeStale(root)
	assert.NoDirExists(t, dead)
	assert.DirExists(t, live)
	assert.DirExists(t, fresh)
	assert.DirExists(t, serverAlive)
	assert.DirExists(t, unrelated)
}

func TestUniqueName(t *testing.T) {
	a := uniqueName("TestSomething/with spaces & Ünïcode")
	b := uniqueName("TestSomething/with spaces & Ünïcode")
	assert.NotEqual(t, a, b)
	assert.Regexp(t, `^t\d+_[a-z0-9_]+$`, a)
	long := uniqueName(string(make([]byte, 200)))
	assert.LessOrEqual(t, len(long), 63)
}
