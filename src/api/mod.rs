//! The GraphQL API, independent of the web framework. Resolvers are thin: they parse GraphQL input, call
//! a use case of `service/`, and map the result. Roots are merged from one module per domain ([`jobs`],
//! [`datasets`], [`models`], [`admin`]), each holding its resolvers and output types; errors are mapped
//! to codes in one place ([`error`]), every list pages one way ([`paging`]), and DataLoaders are created
//! per request ([`loaders`]), and the root's fields are answered in the document's order ([`order`]).
//!
//! Limits ([`limits`]): nesting 64, 15 000 tokens, 10 000 selections with fragments expanded, depth 16,
//! complexity 5000 (a list counts its page size times its items); page size 100, metric points per
//! request 10 000.

/// A GraphQL enum mirroring a domain enum variant for variant, with conversions both ways.
macro_rules! mirror_enum {
    ($(#[$meta:meta])* $name:ident => $domain:path { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(async_graphql::Enum, Copy, Clone, Eq, PartialEq, Debug)]
        pub enum $name { $($variant),+ }
        impl From<$domain> for $name {
            fn from(v: $domain) -> Self { match v { $(<$domain>::$variant => Self::$variant),+ } }
        }
        impl From<$name> for $domain {
            fn from(v: $name) -> Self { match v { $($name::$variant => <$domain>::$variant),+ } }
        }
    };
}

pub mod admin;
pub mod augment;
pub mod datasets;
pub mod error;
pub mod inference;
pub mod jobs;
pub mod limits;
pub mod loaders;
pub mod models;
mod observe;
mod order;
pub mod paging;
mod suggest;
pub mod uploads;

use async_graphql::{Context, MergedObject, MergedSubscription, Schema};

use crate::auth::Principal;
use crate::service::Service;

pub use crate::domain::timestamp;
pub use error::{ApiError, ApiResult};

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    jobs::JobsQuery,
    jobs::QueueQuery,
    jobs::AnalyticsQuery,
    datasets::DatasetsQuery,
    augment::AugmentQuery,
    uploads::UploadsQuery,
    models::ModelsQuery,
    inference::InferenceQuery,
    admin::AdminQuery,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    jobs::JobsMutation,
    jobs::QueueMutation,
    datasets::DatasetsMutation,
    augment::AugmentMutation,
    models::ModelsMutation,
    inference::InferenceMutation,
    admin::AdminMutation,
);

#[derive(MergedSubscription, Default)]
pub struct SubscriptionRoot(jobs::JobsSubscription, uploads::UploadsSubscription);

pub type ApiSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

fn builder() -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .extension(limits::Limits)
    .extension(order::DocumentOrder)
    .extension(suggest::Suggestions)
}

pub fn schema(service: Service) -> ApiSchema {
    builder()
        .extension(observe::RequestMetrics(service.metrics().clone()))
        .data(service)
        .finish()
}

/// The SDL that `kiln schema` prints and `schema.graphql` holds.
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// The use cases, from a resolver's context.
fn service<'a>(ctx: &Context<'a>) -> &'a Service {
    ctx.data_unchecked::<Service>()
}

/// The caller, from a resolver's context.
fn caller<'a>(ctx: &Context<'a>) -> ApiResult<&'a Principal> {
    ctx.data_opt::<Principal>()
        .ok_or_else(|| ApiError::Unauthenticated("no API token".into()))
}

/// Adds what one request needs: the caller and fresh DataLoaders.
pub fn prepare(
    request: async_graphql::Request,
    service: &Service,
    principal: Principal,
) -> async_graphql::Request {
    loaders::attach(request.data(principal), service)
}

/// A response holding only `error`, for requests refused before they reach the schema (no location:
/// the error is about the request as a whole).
pub fn error_response(error: ApiError) -> async_graphql::Response {
    let error: async_graphql::Error = error.into();
    let mut server_error = async_graphql::ServerError::new(error.message, None);
    server_error.extensions = error.extensions;
    async_graphql::Response::from_errors(vec![server_error])
}

/// Upload limits for the multipart request parser.
pub fn multipart_options(max_file_bytes: u64) -> async_graphql::http::MultipartOptions {
    async_graphql::http::MultipartOptions::default()
        .max_file_size(usize::try_from(max_file_bytes).unwrap_or(usize::MAX))
        .max_num_files(1)
}
