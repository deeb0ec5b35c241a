-- name: CheckpointGet :one
SELECT coalesce((SELECT last_seq FROM projection_checkpoints WHERE name = @name), 0)::bigint AS last_seq;

-- name: CheckpointAdvance :execrows
-- Compare-and-set: moves the checkpoint only from @prev. 0 rows means another instance moved it first.
INSERT INTO projection_checkpoints AS c (name, last_seq, updated_at)
VALUES (@name, @next::bigint, now())
ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq, updated_at = excluded.updated_at
WHERE c.last_seq = @prev::bigint;

-- name: CheckpointList :many
SELECT name, last_seq, updated_at FROM projection_checkpoints ORDER BY name;

-- name: CheckpointAdvanceOrFail :exec
-- Raises SQLSTATE AC001 when the checkpoint is not at @prev (see projection_advance).
SELECT projection_advance(@name::text, @prev::bigint, @next::bigint);
