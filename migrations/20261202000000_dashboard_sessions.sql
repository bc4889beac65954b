-- Dashboard sessions. The cookie holds a random session id, never the API token it was opened
-- with; only a SHA-256 of the id is kept (256 random bits: nothing to brute-force), so the table
-- grants nothing if it leaks. A session ends when it expires, when its holder signs out, or when
-- its token is revoked (checked through the join on every request).
CREATE TABLE dashboard_sessions (
    id_hash     bytea       PRIMARY KEY,
    token_id    uuid        NOT NULL REFERENCES api_tokens (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz
);

CREATE INDEX dashboard_sessions_token ON dashboard_sessions (token_id);
