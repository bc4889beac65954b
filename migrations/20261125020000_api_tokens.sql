-- Bearer tokens for /api/* and the dashboard. Only a SHA-256 of each token is kept: the tokens
-- are 256 random bits, so a fast hash is enough (nothing to brute-force), and a leaked table
-- grants nothing. A token is shown once, when it is created.
CREATE TABLE api_tokens (
    id          uuid        PRIMARY KEY,
    role        text        NOT NULL CHECK (role IN ('operator', 'analyst', 'auditor', 'supervisor')),
    label       text        NOT NULL DEFAULT '',
    token_hash  bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
