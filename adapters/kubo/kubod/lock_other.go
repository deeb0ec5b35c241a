//go:build !unix

package kubod

import "context"

// lockFile is a no-op where flock is unavailable; the build still installs
// the binary by atomic rename, so concurrent builders waste work but never
// expose a partial binary.
func lockFile(ctx context.Context, path string, waiting func()) (unlock func(), err error) {
	return func() {}, ctx.Err()
}
