-- name: TokenInsert :exec
INSERT INTO tokens (org_id, token_id, subject, label, scopes, key_id, issued_at, expires_at, last_seq)
VALUES (@org_id, @token_id, @subject, @label, @scopes, @key_id, @issued_at, @expires_at, @last_seq)
ON CONFLICT (org_id, token_id) DO NOTHING;

-- name: TokenRevoke :exec
UPDATE tokens SET revoked_at = @revoked_at, revoke_reason = @reason, last_seq = @last_seq
WHERE org_id = @org_id AND token_id = @token_id AND revoked_at IS NULL;

-- name: TokenList :many
SELECT org_id, token_id, subject, label, scopes, key_id, issued_at, expires_at, revoked_at, revoke_reason
FROM tokens WHERE org_id = @org_id ORDER BY issued_at DESC, token_id;

-- name: TokenGet :one
SELECT org_id, token_id, subject, label, scopes, key_id, issued_at, expires_at, revoked_at, revoke_reason
FROM tokens WHERE org_id = @org_id AND token_id = @token_id;
