package pgcluster

import (
	"os"
	"syscall"
)

// TempRootEnv overrides TempRoot.
const TempRootEnv = "ANCHORAGE_PG_TMPDIR"

// minShmFree is the free space /dev/shm needs for TempRoot to pick it
// (Docker's default 64 MiB /dev/shm is far too small for a cluster).
const minShmFree = 1 << 30

const tmpfsMagic = 0x01021994

// TempRoot returns a good parent directory for throwaway (Ephemeral)
// clusters: $ANCHORAGE_PG_TMPDIR if set; else os.TempDir() if it is a
// tmpfs; else /dev/shm if it is a tmpfs with at least 1 GiB free; else
// os.TempDir(). A fresh cluster is ~40 MB of small files, and on a busy
// disk writing them costs seconds where tmpfs takes milliseconds.
func TempRoot() string {
	if d := os.Getenv(TempRootEnv); d != "" {
		return d
	}
	tmp := os.TempDir()
	if isTmpfs(tmp, 0) {
		return tmp
	}
	if isTmpfs("/dev/shm", minShmFree) && writableSticky("/dev/shm") {
		return "/dev/shm"
	}
	return tmp
}

func isTmpfs(dir string, minFree uint64) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	return int64(st.Type) == tmpfsMagic && st.Bavail*uint64(st.Bsize) >= minFree
}

// writableSticky reports whether dir is a world-writable sticky directory
// like /tmp (so MkdirTemp in it is safe and allowed).
func writableSticky(dir string) bool {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return false
	}
	m := fi.Mode()
	return m&os.ModeSticky != 0 && m.Perm()&0o002 != 0
}
