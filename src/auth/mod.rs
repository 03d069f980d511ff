//! API tokens: minted at random, shown once, stored as SHA-256 hashes, checked on every request.
//!
//! Verified tokens are cached in memory (for [`CACHE_SECONDS`] by default), so a request costs no
//! database round trip for authentication once its token has been seen; while the database cannot be
//! reached, a token verified before keeps working from the cache, so requests that need no database
//! are still served.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

pub const CACHE_SECONDS: u64 = 60;
/// The shortest `KILN_ADMIN_TOKEN` accepted.
pub const MIN_CONFIGURED_TOKEN: usize = 32;
/// The name of the token `KILN_ADMIN_TOKEN` configures.
const CONFIGURED_ADMIN: &str = "admin (KILN_ADMIN_TOKEN)";
const TOKEN_PREFIX: &str = "kiln_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    fn parse(raw: &str) -> Self {
        if raw == "admin" {
            Self::Admin
        } else {
            Self::Member
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub role: Role,
    /// When the token was minted, epoch ms.
    pub created_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing API token: send the header `Authorization: Bearer <token>`")]
    Missing,
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    #[error("invalid API token")]
    Invalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Authenticator {
    store: Store,
    cache: Mutex<HashMap<String, (Principal, Instant)>>,
    fresh_for: Duration,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token: `kiln_` and 64 hex digits.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// Mints a token; the plain token is returned once and only its hash is kept.
pub async fn mint(
    store: &Store,
    name: &str,
    role: Role,
) -> Result<(String, crate::store::TokenRecord), StoreError> {
    let token = generate_token();
    let id = uuid::Uuid::new_v4().to_string();
    let record = store
        .insert_token(&id, name, &hash(&token), role.as_str())
        .await?;
    Ok((token, record))
}

impl Authenticator {
    /// Verified tokens are trusted without asking the database for `fresh_for`.
    pub fn new(store: Store, fresh_for: Duration) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
            fresh_for,
        }
    }

    /// Checks an `Authorization` header value: `Bearer <token>`, the scheme in any case. A token that
    /// is not printable ASCII is invalid (no token ever is).
    pub async fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, AuthError> {
        let header = std::str::from_utf8(header.ok_or(AuthError::Missing)?)
            .map_err(|_| AuthError::Invalid)?
            .trim();
        if header.is_empty() {
            return Err(AuthError::Missing);
        }
        let (scheme, token) = header
            .split_once(char::is_whitespace)
            .unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::Invalid);
        }
        let key = hash(token);
        let cached = self.cache.lock().expect("auth cache").get(&key).cloned();
        if let Some((principal, at)) = &cached
            && at.elapsed() < self.fresh_for
        {
            return Ok(principal.clone());
        }
        let record = match self.store.find_token(&key).await {
            Ok(record) => record.ok_or(AuthError::Invalid)?,
            // The database is down: a token it confirmed before still stands.
            Err(StoreError::Unavailable) if cached.is_some() => {
                return Ok(cached.expect("checked").0);
            }
            Err(e) => return Err(e.into()),
        };
        let principal = Principal {
            token_id: record.id,
            name: record.name,
            role: Role::parse(&record.role),
            created_at: record.created_at,
        };
        self.cache
            .lock()
            .expect("auth cache")
            .insert(key, (principal.clone(), Instant::now()));
        Ok(principal)
    }

    /// Makes sure an admin can get in: stores `configured` when given and unknown; otherwise, when no
    /// token exists at all, mints one and returns it so the caller can print it.
    pub async fn bootstrap_admin(
        &self,
        configured: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        if let Some(token) = configured {
            let token = token.trim();
            if token.len() < MIN_CONFIGURED_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "KILN_ADMIN_TOKEN must be at least {MIN_CONFIGURED_TOKEN} printable ASCII \
                     characters without spaces (`openssl rand -hex 32` makes one)"
                )));
            }
            // A token configured before is revoked when the setting changes.
            self.store
                .delete_tokens_named_except(CONFIGURED_ADMIN, &hash(token))
                .await?;
            if self.store.find_token(&hash(token)).await?.is_none() {
                let id = uuid::Uuid::new_v4().to_string();
                self.store
                    .insert_token(&id, CONFIGURED_ADMIN, &hash(token), Role::Admin.as_str())
                    .await?;
            }
            return Ok(None);
        }
        if self.store.count_tokens().await? > 0 {
            return Ok(None);
        }
        let (token, _) = mint(&self.store, "admin", Role::Admin).await?;
        Ok(Some(token))
    }
}
