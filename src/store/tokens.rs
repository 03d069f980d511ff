//! API tokens, stored as SHA-256 hashes (tokens are 256-bit random, so a fast hash is enough).

use sqlx::Row;

use super::{Store, StoreResult};
use crate::domain::now_ms;

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: i64,
}

impl Store {
    pub async fn count_tokens(&self) -> StoreResult<i64> {
        self.tick()?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        Ok(row.try_get("n")?)
    }

    pub async fn insert_token(
        &self,
        id: &str,
        name: &str,
        token_hash: &str,
        role: &str,
    ) -> StoreResult<TokenRecord> {
        self.tick()?;
        let created_at = now_ms();
        sqlx::query("INSERT INTO api_tokens (id, name, token_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(name)
            .bind(token_hash)
            .bind(role)
            .bind(created_at)
            .execute(&self.pool)
            .await.map_err(|e| self.note(e))?;
        Ok(TokenRecord {
            id: id.into(),
            name: name.into(),
            role: role.into(),
            created_at,
        })
    }

    /// Removes the tokens called `name` whose hash is not `keep` (revoking a replaced token).
    pub async fn delete_tokens_named_except(&self, name: &str, keep: &str) -> StoreResult<u64> {
        self.tick()?;
        let done = sqlx::query("DELETE FROM api_tokens WHERE name = $1 AND token_hash <> $2")
            .bind(name)
            .bind(keep)
            .execute(&self.pool)
            .await
            .map_err(|e| self.note(e))?;
        Ok(done.rows_affected())
    }

    pub async fn find_token(&self, token_hash: &str) -> StoreResult<Option<TokenRecord>> {
        self.tick()?;
        let row =
            sqlx::query("SELECT id, name, role, created_at FROM api_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.note(e))?;
        row.map(|r| {
            Ok(TokenRecord {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                role: r.try_get("role")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }
}
