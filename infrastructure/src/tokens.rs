//! API tokens, stored hashed. A token is `hl_` followed by 256 random bits (base64url); only its
//! SHA-256 is kept, so the table grants nothing if it leaks, and the token itself is shown once.
//! Dashboard sessions, opened with a token, are kept the same way.

use application::auth::Role;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// Every token starts with this, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "hl_";

/// Every dashboard session id starts with this: a session is not a token, and is never taken
/// for one.
pub const SESSION_PREFIX: &str = "hs_";

/// A token as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: Uuid,
    pub role: Role,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The token store.
#[derive(Debug, Clone)]
pub struct ApiTokens {
    pool: PgPool,
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl ApiTokens {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates a token with `role`; the returned secret is the only copy.
    pub async fn create(&self, role: Role, label: &str) -> sqlx::Result<(Uuid, SecretString)> {
        let bytes: [u8; 32] = rand::rng().random();
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let id = Uuid::new_v4();
        sqlx::query("INSERT INTO api_tokens (id, role, label, token_hash) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(role.as_str())
            .bind(label)
            .bind(hash(&token))
            .execute(&self.pool)
            .await?;
        Ok((id, SecretString::from(token)))
    }

    /// The role of `token`, if it is a live token.
    pub async fn authenticate(&self, token: &SecretString) -> sqlx::Result<Option<Role>> {
        Ok(self.live(token).await?.map(|(_, role)| role))
    }

    /// The id and role of `token`, if it is a live token.
    pub async fn live(&self, token: &SecretString) -> sqlx::Result<Option<(Uuid, Role)>> {
        let token = token.expose_secret();
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let row: Option<(Uuid, String)> = sqlx::query_as(
            "SELECT id, role FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash(token))
        .fetch_optional(&self.pool)
        .await?;
        // The table's CHECK only admits known roles.
        Ok(row.and_then(|(id, role)| Some((id, role.parse().ok()?))))
    }

    /// Opens a dashboard session for `token` if it is live: the session id (the cookie's value,
    /// the only copy) and the token's role. The session lasts `lifetime` at most.
    pub async fn open_session(
        &self,
        token: &SecretString,
        lifetime: std::time::Duration,
    ) -> sqlx::Result<Option<(SecretString, Role)>> {
        let Some((token_id, role)) = self.live(token).await? else {
            return Ok(None);
        };
        let bytes: [u8; 32] = rand::rng().random();
        let session = format!(
            "{SESSION_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(12));
        // Sessions long over are dropped as new ones open: the table stays small.
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at < now() - interval '1 day'")
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (id_hash, token_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(hash(&session))
        .bind(token_id)
        .bind(Utc::now() + lifetime)
        .execute(&self.pool)
        .await?;
        Ok(Some((SecretString::from(session), role)))
    }

    /// The role of `session`'s token, if the session is open: not expired, not signed out, and
    /// its token not revoked.
    pub async fn session_role(&self, session: &SecretString) -> sqlx::Result<Option<Role>> {
        let session = session.expose_secret();
        if !session.starts_with(SESSION_PREFIX) {
            return Ok(None);
        }
        let role: Option<String> = sqlx::query_scalar(
            "SELECT t.role FROM dashboard_sessions s JOIN api_tokens t ON t.id = s.token_id \
             WHERE s.id_hash = $1 AND s.ended_at IS NULL AND s.expires_at > now() \
               AND t.revoked_at IS NULL",
        )
        .bind(hash(session))
        .fetch_optional(&self.pool)
        .await?;
        Ok(role.and_then(|r| r.parse().ok()))
    }

    /// Ends `session` (signing out); nothing happens if it is not open.
    pub async fn end_session(&self, session: &SecretString) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE dashboard_sessions SET ended_at = now() WHERE id_hash = $1 AND ended_at IS NULL",
        )
        .bind(hash(session.expose_secret()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revokes token `id`; false if there is no such live token.
    pub async fn revoke(&self, id: Uuid) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every token, oldest first.
    pub async fn list(&self) -> sqlx::Result<Vec<TokenInfo>> {
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT id, role, label, created_at, revoked_at FROM api_tokens ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(TokenInfo {
                    id: row.id,
                    role: row.role.parse().ok()?,
                    label: row.label,
                    created_at: row.created_at,
                    revoked_at: row.revoked_at,
                })
            })
            .collect())
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    role: String,
    label: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}
