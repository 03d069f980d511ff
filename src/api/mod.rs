//! The GraphQL API, independent of the web framework: roots merged from one file per domain, errors
//! mapped in one place ([`error`]), DataLoaders created per request ([`loaders`]).
//!
//! Limits: query depth 16, complexity 5000, page size 100, metric points per request 10000.

pub mod admin;
pub mod datasets;
pub mod error;
pub mod jobs;
pub mod loaders;
pub mod models;
pub mod types;

use std::sync::Arc;

use async_graphql::{MergedObject, MergedSubscription, Schema};

use crate::app::AppState;
use crate::auth::Principal;

pub use error::ApiError;

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    jobs::JobsQuery,
    datasets::DatasetsQuery,
    models::ModelsQuery,
    admin::AdminQuery,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    jobs::JobsMutation,
    datasets::DatasetsMutation,
    admin::AdminMutation,
);

#[derive(MergedSubscription, Default)]
pub struct SubscriptionRoot(jobs::JobsSubscription);

pub type ApiSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

const MAX_DEPTH: usize = 16;
const MAX_COMPLEXITY: usize = 5000;

fn builder() -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
}

pub fn schema(state: Arc<AppState>) -> ApiSchema {
    builder().data(state).finish()
}

/// The SDL that `kiln schema` prints and `schema.graphql` holds.
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// Adds what one request needs: the caller and fresh DataLoaders.
pub fn prepare(
    request: async_graphql::Request,
    state: &AppState,
    principal: Principal,
) -> async_graphql::Request {
    loaders::attach(request.data(principal), &state.store)
}

/// A response holding only `error`, for requests refused before they reach the schema.
pub fn error_response(error: ApiError) -> async_graphql::Response {
    let error: async_graphql::Error = error.into();
    async_graphql::Response::from_errors(vec![
        error.into_server_error(async_graphql::Pos::default()),
    ])
}

/// Upload limits for the multipart request parser.
pub fn multipart_options(max_file_bytes: u64) -> async_graphql::http::MultipartOptions {
    async_graphql::http::MultipartOptions::default()
        .max_file_size(usize::try_from(max_file_bytes).unwrap_or(usize::MAX))
        .max_num_files(1)
}
