//! The one way every list pages: a Relay connection (`edges { cursor node }`, `nodes`, `pageInfo`,
//! `totalCount`) with opaque cursors, forward only (`first`, `after`).
//!
//! A resolver parses its arguments with [`PageRequest::parse`], asks the service for `first + 1` rows
//! after the cursor's key, and hands them to [`page`], which keeps `first`, says whether there is a next
//! page, and encodes each row's key as its cursor. `totalCount` costs one more query and runs only when
//! a client asks for it.

use async_graphql::connection::{Connection, Edge, OpaqueCursor};
use async_graphql::{Context, Object, OutputType};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ApiError, ApiResult, service};
use crate::domain::JobFilter;

/// The most items one page returns.
pub const MAX_PAGE: i32 = 100;
/// Items per page when `first` is absent.
pub const DEFAULT_PAGE: i32 = 20;

/// A page of `Node`s whose rows are ordered by a key of type `K` (the cursor holds the key).
pub type Page<K, Node> = Connection<OpaqueCursor<K>, Node, TotalCount>;

/// A page's share of a query's complexity: its items' complexity times the page size asked for.
pub fn complexity(first: Option<i32>, child_complexity: usize) -> usize {
    first.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize * child_complexity
}

/// `first` and the decoded `after` cursor of a request.
#[derive(Debug, Clone)]
pub struct PageRequest<K> {
    pub first: usize,
    pub after: Option<K>,
}

impl<K: Serialize + DeserializeOwned> PageRequest<K> {
    /// Checks `first` (1–[`MAX_PAGE`], default [`DEFAULT_PAGE`]) and decodes `after`; either problem is
    /// `BAD_USER_INPUT` naming the argument.
    pub fn parse(first: Option<i32>, after: Option<String>) -> ApiResult<Self> {
        let first = first.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(ApiError::bad(
                "first",
                format!("must be between 1 and {MAX_PAGE} (got {first})"),
            ));
        }
        let after = after
            .map(|raw| {
                use async_graphql::connection::CursorType;
                OpaqueCursor::<K>::decode_cursor(&raw)
                    .map(|c| c.0)
                    .map_err(|_| ApiError::bad("after", "is not a cursor returned by this API"))
            })
            .transpose()?;
        Ok(Self {
            first: first as usize,
            after,
        })
    }

    /// How many rows to fetch: one more than the page, to tell whether another page follows.
    pub fn fetch(&self) -> i64 {
        self.first as i64 + 1
    }
}

/// Builds the page from the rows fetched for `request` (at most [`PageRequest::fetch`]): `key` gives a
/// row's cursor key, `node` its GraphQL form.
pub fn page<K, Row, Node>(
    request: &PageRequest<K>,
    mut rows: Vec<Row>,
    count: Count,
    key: impl Fn(&Row) -> K,
    node: impl Fn(Row) -> Node,
) -> Page<K, Node>
where
    K: Serialize + DeserializeOwned + Send + Sync,
    Node: OutputType,
{
    let has_next_page = rows.len() > request.first;
    rows.truncate(request.first);
    let mut connection = Connection::with_additional_fields(
        request.after.is_some(),
        has_next_page,
        TotalCount(count),
    );
    connection.edges = rows
        .into_iter()
        .map(|row| Edge::new(OpaqueCursor(key(&row)), node(row)))
        .collect();
    connection
}

/// Which total a connection's `totalCount` reports.
#[derive(Debug, Clone)]
pub enum Count {
    Jobs(JobFilter),
    Datasets,
    Models,
}

/// The `totalCount` field every connection has.
pub struct TotalCount(Count);

#[Object]
impl TotalCount {
    /// Every item the list holds (matching its filter), not only this page's; costs one more query, so
    /// ask only when you show it.
    async fn total_count(&self, ctx: &Context<'_>) -> ApiResult<i64> {
        let service = service(ctx);
        Ok(match &self.0 {
            Count::Jobs(filter) => service.count_jobs(filter).await?,
            Count::Datasets => service.count_datasets().await?,
            Count::Models => service.count_models().await?,
        })
    }
}
