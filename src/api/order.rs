//! The answer's top-level fields in the order the document asks for them, as the GraphQL
//! specification requires ("Serialized Map Ordering"). async-graphql resolves a merged root (kiln's
//! `Query` and `Mutation` join one object per domain) one part at a time, so its answer lists each
//! part's fields together; below the root, objects keep the document's order themselves.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, Response, ServerResult, Value, Variables};

/// The extension that puts the root's fields back in the document's order.
pub struct DocumentOrder;

impl ExtensionFactory for DocumentOrder {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DocumentOrderExtension::default())
    }
}

#[derive(Default)]
struct DocumentOrderExtension {
    /// Each operation's name and root keys, from parsing until the answer is ready.
    operations: Mutex<Vec<(Option<Name>, Vec<Name>)>>,
}

#[async_trait::async_trait]
impl Extension for DocumentOrderExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        *self.operations.lock().expect("operations lock") = root_keys(&document);
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        let operations = std::mem::take(&mut *self.operations.lock().expect("operations lock"));
        let order = operations
            .into_iter()
            .find(|(name, _)| operation_name.is_none() || name.as_deref() == operation_name)
            .map(|(_, keys)| keys);
        if let (Some(order), Value::Object(data)) = (order, &mut response.data) {
            let mut ordered = async_graphql::indexmap::IndexMap::with_capacity(data.len());
            for key in order {
                if let Some(value) = data.shift_remove(&key) {
                    ordered.insert(key, value);
                }
            }
            ordered.extend(data.drain(..));
            *data = ordered;
        }
        response
    }
}

/// Each operation's name and the response keys (alias or name) of its root, in document order,
/// fragments expanded where they are spread.
fn root_keys(document: &ExecutableDocument) -> Vec<(Option<Name>, Vec<Name>)> {
    document
        .operations
        .iter()
        .map(|(name, operation)| {
            let mut keys = Vec::new();
            collect(
                document,
                &operation.node.selection_set.node,
                &mut keys,
                &mut HashSet::new(),
                &mut Vec::new(),
            );
            (name.cloned(), keys)
        })
        .collect()
}

fn collect<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    keys: &mut Vec<Name>,
    seen: &mut HashSet<Name>,
    spreading: &mut Vec<&'a str>,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => {
                let key = field.node.response_key().node.clone();
                if seen.insert(key.clone()) {
                    keys.push(key);
                }
            }
            Selection::InlineFragment(inline) => {
                collect(
                    document,
                    &inline.node.selection_set.node,
                    keys,
                    seen,
                    spreading,
                );
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                // A cycle is refused by validation; it must not loop here first.
                if spreading.contains(&name) {
                    continue;
                }
                if let Some(fragment) = document.fragments.get(name) {
                    spreading.push(name);
                    collect(
                        document,
                        &fragment.node.selection_set.node,
                        keys,
                        seen,
                        spreading,
                    );
                    spreading.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_keys_follow_the_document_through_fragments() {
        let document = async_graphql::parser::parse_query(
            "query A { z: job(id: 1) { id } ...F me { name } ... on Query { b: jobs { totalCount } } z: job(id: 1) { name } } \
             query B { other } fragment F on Query { a: models { totalCount } }",
        )
        .unwrap();
        let operations = root_keys(&document);
        let keys = |operation: &str| -> Vec<String> {
            let (_, keys) = operations
                .iter()
                .find(|(name, _)| name.as_deref() == Some(operation))
                .unwrap();
            keys.iter().map(|k| k.to_string()).collect()
        };
        assert_eq!(keys("A"), ["z", "a", "me", "b"]);
        assert_eq!(keys("B"), ["other"]);
    }
}
