package pgcluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// requiredBinaries are the server programs Start executes.
var requiredBinaries = []string{"initdb", "postgres"}

// defaultVersionedGlob is where Debian/Ubuntu install the server binaries
// (one directory per major version).
const defaultVersionedGlob = "/usr/lib/postgresql/*/bin"

// ErrBinariesNotFound is wrapped by the error FindBinaries (and Start)
// return when the PostgreSQL server programs cannot be located.
var ErrBinariesNotFound = errors.New("PostgreSQL server binaries not found")

// FindBinaries locates a directory holding the PostgreSQL server programs
// (initdb and postgres). It looks on PATH first, then in
// /usr/lib/postgresql/*/bin, picking the highest major version. The returned
// directory has symlinks resolved, so that initdb and postgres find their
// share directory.
func FindBinaries() (binDir string, err error) {
	return findBinaries(os.Getenv("PATH"), []string{defaultVersionedGlob})
}

// findBinaries is FindBinaries with the search inputs made explicit for
// tests: pathList is a PATH-style list, globs are patterns whose matches
// are tried highest version first.
func findBinaries(pathList string, globs []string) (string, error) {
	for _, dir := range filepath.SplitList(pathList) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // relative PATH entries are a security smell; ignore them
		}
		if resolved, ok := binariesIn(dir); ok {
			return resolved, nil
		}
	}
	var candidates []string
	for _, g := range globs {
		m, err := filepath.Glob(g)
		if err != nil {
			continue
		}
		candidates = append(candidates, m...)
	}
	sort.SliceStable(candidates, func(i, j int) bool {
		return versionLess(candidates[j], candidates[i]) // descending
	})
	for _, dir := range candidates {
		if resolved, ok := binariesIn(dir); ok {
			return resolved, nil
		}
	}
	return "", notFoundError(strings.Join(globs, ", "))
}

// checkBinDir validates an explicit Config.BinDir.
func checkBinDir(dir string) (string, error) {
	if resolved, ok := binariesIn(dir); ok {
		return resolved, nil
	}
	return "", fmt.Errorf("%w: %s not found in BinDir %q: install them with `apt-get install postgresql` (Debian/Ubuntu) or point BinDir at the directory holding them",
		ErrBinariesNotFound, strings.Join(requiredBinaries, ", "), dir)
}

func notFoundError(where string) error {
	return fmt.Errorf("%w: %s not found on PATH or in %s: install them with `apt-get install postgresql` (Debian/Ubuntu) or put them on PATH",
		ErrBinariesNotFound, strings.Join(requiredBinaries, ", "), where)
}

// binariesIn reports whether dir holds all required executables. It
// returns the directory the first one really lives in (symlinks resolved),
// provided the others are there as well.
func binariesIn(dir string) (string, bool) {
	var real string
	for i, name := range requiredBinaries {
		p := filepath.Join(dir, name)
		if !isExecutable(p) {
			return "", false
		}
		if i == 0 {
			r, err := filepath.EvalSymlinks(p)
			if err != nil {
				return "", false
			}
			real = filepath.Dir(r)
		}
	}
	// The binaries must sit together after resolving symlinks (initdb looks
	// for postgres next to itself).
	for _, name := range requiredBinaries {
		if !isExecutable(filepath.Join(real, name)) {
			return "", false
		}
	}
	return real, true
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// versionLess orders /usr/lib/postgresql/<major>/bin paths by numeric
// major version, falling back to lexical order.
func versionLess(a, b string) bool {
	va, okA := majorOf(a)
	vb, okB := majorOf(b)
	switch {
	case okA && okB && va != vb:
		return va < vb
	case okA != okB:
		return !okA // unparsable sorts lowest
	}
	return a < b
}

func majorOf(binDir string) (float64, bool) {
	v := filepath.Base(filepath.Dir(filepath.Clean(binDir)))
	f, err := strconv.ParseFloat(v, 64)
	return f, err == nil
}
