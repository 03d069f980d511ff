//! The model registry: models and their versions.

use async_graphql::{Context, Object};

use super::error::ApiResult;
use super::types::{Model, PageInfo, page_size, state};

#[derive(Default)]
pub struct ModelsQuery;

#[Object]
impl ModelsQuery {
    async fn model(&self, ctx: &Context<'_>, name: String) -> ApiResult<Option<Model>> {
        Ok(state(ctx).store.get_model(&name).await?.map(Model))
    }

    /// By name. `first`: 1–100 (default 20); `after`: the last name of the previous page.
    async fn models(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<ModelConnection> {
        let first = page_size(first)?;
        let mut models = state(ctx)
            .store
            .list_models(first + 1, after.as_deref())
            .await?;
        let has_next_page = models.len() as i64 > first;
        models.truncate(first as usize);
        Ok(ModelConnection {
            models,
            has_next_page,
        })
    }
}

pub struct ModelConnection {
    models: Vec<crate::store::ModelRecord>,
    has_next_page: bool,
}

#[Object]
impl ModelConnection {
    async fn nodes(&self) -> Vec<Model> {
        self.models.iter().cloned().map(Model).collect()
    }
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next_page,
            end_cursor: self.models.last().map(|m| m.name.clone()),
        }
    }
    async fn total_count(&self, ctx: &Context<'_>) -> ApiResult<i64> {
        Ok(state(ctx).store.count_models().await?)
    }
}
