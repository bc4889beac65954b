//! API tokens, stored hashed. A token is `hl_` followed by 256 random bits (base64url); only its
//! SHA-256 is kept, so the table grants nothing if it leaks, and the token itself is shown once.

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
        let token = token.expose_secret();
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash(token))
        .fetch_optional(&self.pool)
        .await?;
        // The table's CHECK only admits known roles.
        Ok(role.and_then(|r| r.parse().ok()))
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
