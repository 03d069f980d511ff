//! Administration: API tokens.

use async_graphql::{Context, ID, Object, SimpleObject};

use super::error::{ApiError, ApiResult};
use super::types::{state, timestamp};
use crate::auth::{Principal, Role};

#[derive(SimpleObject)]
pub struct ApiToken {
    pub id: ID,
    pub name: String,
    pub role: String,
    pub created_at: String,
}

/// A new token. `token` is shown this once; kiln keeps only its hash.
#[derive(SimpleObject)]
pub struct CreatedApiToken {
    pub token: String,
    pub api_token: ApiToken,
}

#[derive(Default)]
pub struct AdminQuery;

#[Object]
impl AdminQuery {
    /// The token this request was made with.
    async fn me(&self, ctx: &Context<'_>) -> ApiResult<ApiToken> {
        let p = ctx
            .data_opt::<Principal>()
            .ok_or_else(|| ApiError::Unauthenticated("no API token".into()))?;
        Ok(ApiToken {
            id: ID(p.token_id.clone()),
            name: p.name.clone(),
            role: p.role.as_str().into(),
            created_at: timestamp(p.created_at),
        })
    }
}

#[derive(Default)]
pub struct AdminMutation;

#[Object]
impl AdminMutation {
    /// Mints a member token (admins only). `name`: 1–200 characters, to tell tokens apart.
    async fn create_api_token(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> ApiResult<CreatedApiToken> {
        let caller = ctx
            .data_opt::<Principal>()
            .ok_or_else(|| ApiError::Unauthenticated("no API token".into()))?;
        if caller.role != Role::Admin {
            return Err(ApiError::Forbidden(
                "only an admin token can create tokens".into(),
            ));
        }
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(ApiError::bad("name", "must be 1 to 200 characters"));
        }
        let (token, record) = state(ctx).auth.mint(name, Role::Member).await?;
        Ok(CreatedApiToken {
            token,
            api_token: ApiToken {
                id: ID(record.id),
                name: record.name,
                role: record.role,
                created_at: timestamp(record.created_at),
            },
        })
    }
}
