package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFuzzTaskRunsEveryFuzzTarget: `go tool task fuzz` says it runs every fuzz target, so each func FuzzX in the
// repository must appear there with its own package. (It once ran two of eight.)
func TestFuzzTaskRunsEveryFuzzTarget(t *testing.T) {
	t.Parallel()
	taskfile, err := os.ReadFile("../../Taskfile.yml")
	require.NoError(t, err)
	fuzzFunc := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	found := 0
	err = filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "../.." || d.Name() == "node_modules" || d.Name() == "tools") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel("../..", filepath.Dir(path))
		if err != nil {
			return err
		}
		for _, m := range fuzzFunc.FindAllSubmatch(src, -1) {
			found++
			want := "go test ./" + filepath.ToSlash(rel) + "/ -run '^$' -fuzz '^" + string(m[1]) + "$'"
			require.Contains(t, string(taskfile), want, "%s (in %s) is missing from the Taskfile's fuzz task", m[1], path)
		}
		return nil
	})
	require.NoError(t, err)
	require.GreaterOrEqual(t, found, 8, "the walk found fewer fuzz targets than the repository has")
}
