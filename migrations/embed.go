// Package migrations holds the PostgreSQL schema of anchorage's read models as numbered golang-migrate files
// (NNNNNN_name.up.sql / .down.sql), embedded into the binary. sqlc reads the same files as its schema.
package migrations

import "embed"

// FS holds every migration file.
//
//go:embed *.sql
var FS embed.FS
