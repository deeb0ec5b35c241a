package pgcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"
)

// PrewarmStats says what Prewarm asked the kernel to read ahead.
type PrewarmStats struct {
	Files int
	Bytes int64
}

// PrewarmIndexes asks the kernel to read the files of every index of database's public schema into its page
// cache, in the background (posix_fadvise WILLNEED: no copying, little CPU), and returns once the requests are
// made. After a reboot the cache is empty, and until PostgreSQL has read the read models' index pages back, one
// random read at a time, every projector batch waits on the disk: at 1.2M pins the projection lagged by seconds
// during the first burst of writes (docs/recovery.md). Tables are left out: new rows go to their last pages.
func (c *Cluster) PrewarmIndexes(ctx context.Context, database string) (PrewarmStats, error) {
	conn, err := pgx.Connect(ctx, c.SuperuserDSN(database))
	if err != nil {
		return PrewarmStats{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT pg_relation_filepath(i.indexrelid) FROM pg_index i
		JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
		WHERE n.nspname = 'public' AND pg_relation_filepath(i.indexrelid) IS NOT NULL`)
	if err != nil {
		return PrewarmStats{}, err
	}
	paths, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return PrewarmStats{}, fmt.Errorf("pgcluster: list index files: %w", err)
	}
	var st PrewarmStats
	for _, p := range paths {
		// A relation is stored in 1 GB segments: path, path.1, path.2, ...
		for seg := 0; ; seg++ {
			name := filepath.Join(c.dataDir, p)
			if seg > 0 {
				name += "." + strconv.Itoa(seg)
			}
			n, ok := willNeed(name)
			if !ok {
				break
			}
			st.Files++
			st.Bytes += n
		}
	}
	return st, nil
}

// willNeed asks the kernel to read the whole file ahead; ok is false when it cannot be opened.
func willNeed(name string) (size int64, ok bool) {
	f, err := os.Open(name)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return 0, false
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_WILLNEED); err != nil {
		return 0, false
	}
	return info.Size(), true
}
