//! Administration: API tokens.

use async_graphql::{Context, ID, Object, SimpleObject};

use super::{ApiResult, caller, service, timestamp};

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
        let p = caller(ctx)?;
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
        let (token, record) = service(ctx).create_token(caller(ctx)?, &name).await?;
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
