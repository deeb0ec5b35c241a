package pgcluster

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
)

// ErrDirUnreachable is wrapped by the error Start returns when the
// unprivileged user the server must run as cannot reach Config.Dir.
var ErrDirUnreachable = errors.New("cluster directory unreachable by the server user")

// identity is the unprivileged account the server programs run as when the
// current process is root (initdb and postgres refuse to run as root).
type identity struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32 // supplementary groups, including gid
}

func (id *identity) credential() *syscall.Credential {
	if id == nil {
		return nil
	}
	return &syscall.Credential{Uid: id.uid, Gid: id.gid, Groups: id.groups}
}

// chown changes p's owner to id (no-op when id is nil, i.e. not root).
func (id *identity) chown(p string) error {
	if id == nil {
		return nil
	}
	return os.Chown(p, int(id.uid), int(id.gid))
}

// serverIdentity picks the account to run initdb/postgres as. It returns
// nil when the current process is not root (the server runs as us). As
// root it prefers the (non-root) owner of an existing data directory, then
// the "postgres" user, then "nobody".
func serverIdentity(dataDir string) (*identity, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if fi, err := os.Stat(dataDir); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
			if u, err := user.LookupId(strconv.FormatUint(uint64(st.Uid), 10)); err == nil {
				return identityOf(u)
			}
			return &identity{name: strconv.FormatUint(uint64(st.Uid), 10), uid: st.Uid, gid: st.Gid, groups: []uint32{st.Gid}}, nil
		}
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		id, err := identityOf(u)
		if err != nil {
			return nil, err
		}
		if id.uid == 0 {
			continue
		}
		return id, nil
	}
	return nil, errors.New("running as root, but neither a \"postgres\" nor a \"nobody\" user exists to run the PostgreSQL server as (initdb and postgres refuse to run as root): create one, e.g. `adduser --system --group postgres`")
}

func identityOf(u *user.User) (*identity, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: bad uid %q", u.Username, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: bad gid %q", u.Username, u.Gid)
	}
	id := &identity{name: u.Username, uid: uint32(uid), gid: uint32(gid), groups: []uint32{uint32(gid)}}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil && !slices.Contains(id.groups, uint32(n)) {
				id.groups = append(id.groups, uint32(n))
			}
		}
	}
	return id, nil
}

// checkReachable verifies that id can traverse every existing directory on
// the way to dir (dir itself is chowned to id by Start, so only its
// ancestors matter when it exists). Directories that do not exist yet are
// created by Start with mode 0755. ACLs are not considered.
func checkReachable(dir string, id *identity) error {
	if id == nil {
		return nil
	}
	existing := dir
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		existing = parent
	}
	real, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", existing, err)
	}
	p := real
	if existing == dir {
		p = filepath.Dir(real)
	}
	for {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok && (!fi.IsDir() || !searchable(st, id)) {
			return fmt.Errorf("%w: the PostgreSQL server runs as user %q (uid %d) because initdb/postgres refuse to run as root, "+
				"but that user cannot reach %s: %s (mode %v, owner uid %d, gid %d) is not searchable by it. "+
				"Choose a data directory the %s user can reach (e.g. under /var/lib or /tmp, not under /root), "+
				"or grant search permission, e.g. `chmod o+x %s`",
				ErrDirUnreachable, id.name, id.uid, dir, p, fi.Mode().Perm(), st.Uid, st.Gid, id.name, p)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return nil
		}
		p = parent
	}
}

// searchable applies the classic owner/group/other execute-bit rules.
func searchable(st *syscall.Stat_t, id *identity) bool {
	mode := st.Mode
	switch {
	case st.Uid == id.uid:
		return mode&0o100 != 0
	case slices.Contains(id.groups, st.Gid):
		return mode&0o010 != 0
	default:
		return mode&0o001 != 0
	}
}

// copyTree copies the regular files and directories under src to dst
// (which must not exist), preserving permission bits and chowning
// everything to id. Anything else (symlinks, devices) is an error.
func copyTree(src, dst string, id *identity) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		perm := info.Mode().Perm()
		switch {
		case d.IsDir():
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if err := copyFile(p, target); err != nil {
				return err
			}
		default:
			return fmt.Errorf("copy %s: unsupported file type %v", p, info.Mode().Type())
		}
		if err := os.Chmod(target, perm); err != nil {
			return err
		}
		return id.chown(target)
	})
}

func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	_, err = io.Copy(out, in)
	return err
}

// ensureDir creates dir (mode 0700, parents 0755) if needed and hands it
// to id.
func ensureDir(dir string, id *identity) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	return id.chown(dir)
}

// privateDir reports whether dir is a real directory owned by us and not
// writable by group or others (used to trust a shared cache directory).
func privateDir(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid() && fi.Mode().Perm()&0o022 == 0
}
