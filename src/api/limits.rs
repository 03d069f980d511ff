//! What a GraphQL request may cost, checked before any work grows with it, and the error codes of the
//! errors async-graphql raises itself.
//!
//! A document is refused with `QUERY_TOO_COMPLEX` before it is validated when
//! - it nests `{`, `[` or `(` deeper than [`MAX_NESTING`] (the parser recurses on nesting), or holds more
//!   than [`MAX_TOKENS`] tokens: a linear scan of the text, before parsing;
//! - its selections, with every fragment spread expanded, number more than [`MAX_EXPANDED_SELECTIONS`]:
//!   counted once per fragment (each fragment's expanded size is remembered), so a chain of fragments
//!   that each spread the previous one twice costs its length, not two to the power of it. Fragment
//!   cycles are refused here too. An introspection field counts [`INTROSPECTION_WEIGHT`].
//!
//! Validation then computes complexity (list fields count `first`/`last` times their items) and depth;
//! above [`MAX_COMPLEXITY`] or [`MAX_DEPTH`] the request is `QUERY_TOO_COMPLEX`. Other errors of
//! async-graphql get a code by where they arise: `GRAPHQL_PARSE_FAILED` (parsing),
//! `GRAPHQL_VALIDATION_FAILED` (validation, which also checks variables against their types: an Int out
//! of range), `BAD_USER_INPUT` (an argument that fails to convert while a field resolves).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextResolve,
    NextValidation, ResolveInfo,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Pos, Request, ServerError, ServerResult, ValidationResult, Value, Variables};

/// Deepest nesting of `{`, `[` and `(` in a document.
pub const MAX_NESTING: usize = 64;
/// Most tokens (names, punctuation, values) in a document.
pub const MAX_TOKENS: usize = 15_000;
/// Most selections in a document with every fragment spread expanded.
pub const MAX_EXPANDED_SELECTIONS: usize = 10_000;
/// What an introspection field (`__schema`, `__type`) counts towards [`MAX_EXPANDED_SELECTIONS`]: its
/// answer is the schema, large and not counted by complexity; a document may ask for it a few times,
/// not thousands.
pub const INTROSPECTION_WEIGHT: usize = 2_000;
/// Highest complexity: each field counts 1, a list counts its page size (`first`, `last`) times its
/// items.
pub const MAX_COMPLEXITY: usize = 5_000;
/// Deepest selection nesting.
pub const MAX_DEPTH: usize = 16;

pub const TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
const BAD_USER_INPUT: &str = "BAD_USER_INPUT";

/// The extension that enforces these limits and codes async-graphql's own errors.
pub struct Limits;

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(LimitsExtension)
    }
}

struct LimitsExtension;

#[async_trait::async_trait]
impl Extension for LimitsExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        scan_text(&request.query)?;
        let document = request.parsed_query().map_err(|e| coded(e, PARSE_FAILED))?;
        check_expanded_size(document)?;
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|e| coded(e, PARSE_FAILED))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| coded(e, VALIDATION_FAILED))
                .collect::<Vec<_>>()
        })?;
        if result.complexity > MAX_COMPLEXITY {
            return Err(vec![too_complex(format!(
                "the query's complexity is {}, above the limit of {MAX_COMPLEXITY}: ask for fewer \
                 fields or smaller pages (first/last)",
                result.complexity
            ))]);
        }
        if result.depth > MAX_DEPTH {
            return Err(vec![too_complex(format!(
                "the query nests {} levels deep, above the limit of {MAX_DEPTH}",
                result.depth
            ))]);
        }
        Ok(result)
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        // kiln's resolvers always give a code; an error without one is async-graphql's own argument
        // or variable coercion.
        next.run(ctx, info)
            .await
            .map_err(|e| coded(e, BAD_USER_INPUT))
    }
}

/// Gives `error` the code `code` unless it has one.
fn coded(mut error: ServerError, code: &str) -> ServerError {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
    error
}

fn too_complex(message: String) -> ServerError {
    coded(ServerError::new(message, None), TOO_COMPLEX)
}

/// One pass over the text: nesting depth and token count, skipping strings, block strings and
/// comments. Unbalanced brackets are left to the parser.
fn scan_text(query: &str) -> ServerResult<()> {
    let bytes = query.as_bytes();
    let (mut depth, mut tokens, mut i) = (0usize, 0usize, 0usize);
    let mut in_word = false;
    while i < bytes.len() {
        let b = bytes[i];
        let word_byte =
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.' || b >= 0x80;
        if word_byte {
            if !in_word {
                tokens += 1;
                in_word = true;
            }
            i += 1;
            continue;
        }
        in_word = false;
        match b {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                tokens += 1;
                i = skip_string(bytes, i);
                continue;
            }
            b'{' | b'[' | b'(' => {
                tokens += 1;
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(too_complex(format!(
                        "the query nests brackets more than {MAX_NESTING} deep"
                    )));
                }
            }
            b'}' | b']' | b')' => {
                tokens += 1;
                depth = depth.saturating_sub(1);
            }
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {}
            _ => tokens += 1,
        }
        if tokens > MAX_TOKENS {
            return Err(too_complex(format!(
                "the query has more than {MAX_TOKENS} tokens"
            )));
        }
        i += 1;
    }
    Ok(())
}

/// The index just past the string starting at `start` (a `"…"` string with escapes, or a `"""…"""`
/// block string); the end of the text when it is not closed.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    if bytes[start..].starts_with(b"\"\"\"") {
        let mut i = start + 3;
        while i < bytes.len() {
            if bytes[i] == b'\\' && bytes[i + 1..].starts_with(b"\"\"\"") {
                i += 4;
            } else if bytes[i..].starts_with(b"\"\"\"") {
                return i + 3;
            } else {
                i += 1;
            }
        }
        return bytes.len();
    }
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' | b'\n' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Counts the document's selections with fragment spreads expanded, each fragment's size computed once.
fn check_expanded_size(document: &ExecutableDocument) -> ServerResult<()> {
    let mut sizes = FragmentSizes {
        document,
        known: HashMap::new(),
        visiting: Vec::new(),
    };
    let mut total = 0usize;
    for (_, operation) in document.operations.iter() {
        total = total.saturating_add(sizes.of_set(&operation.node.selection_set.node)?);
    }
    if total > MAX_EXPANDED_SELECTIONS {
        return Err(too_complex(format!(
            "the query selects {total} fields once its fragments are expanded, above the limit of \
             {MAX_EXPANDED_SELECTIONS}"
        )));
    }
    Ok(())
}

struct FragmentSizes<'a> {
    document: &'a ExecutableDocument,
    known: HashMap<&'a str, usize>,
    /// Fragments being expanded, to catch cycles.
    visiting: Vec<&'a str>,
}

impl<'a> FragmentSizes<'a> {
    fn of_set(&mut self, set: &'a SelectionSet) -> ServerResult<usize> {
        let mut size = 0usize;
        for item in &set.items {
            let add = match &item.node {
                Selection::Field(field) => {
                    let own = match field.node.name.node.as_str() {
                        "__schema" | "__type" => INTROSPECTION_WEIGHT,
                        _ => 1,
                    };
                    own + self.of_set(&field.node.selection_set.node)?
                }
                Selection::InlineFragment(inline) => {
                    self.of_set(&inline.node.selection_set.node)?
                }
                Selection::FragmentSpread(spread) => {
                    self.of_fragment(&spread.node.fragment_name.node, spread.pos)?
                }
            };
            size = size.saturating_add(add);
            // Stop as soon as the answer is known: sizes saturate rather than overflow.
            if size > MAX_EXPANDED_SELECTIONS {
                return Ok(size);
            }
        }
        Ok(size)
    }

    fn of_fragment(&mut self, name: &'a str, pos: Pos) -> ServerResult<usize> {
        if let Some(size) = self.known.get(name) {
            return Ok(*size);
        }
        if self.visiting.contains(&name) {
            let mut error = ServerError::new(
                format!(
                    "fragment {name} spreads itself (through {})",
                    self.visiting.join(" → ")
                ),
                Some(pos),
            );
            error = coded(error, VALIDATION_FAILED);
            return Err(error);
        }
        // An unknown fragment counts nothing here; validation reports it.
        let Some(fragment) = self.document.fragments.get(name) else {
            return Ok(0);
        };
        self.visiting.push(name);
        let size = self.of_set(&fragment.node.selection_set.node)?;
        self.visiting.pop();
        self.known.insert(name, size);
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bomb(levels: usize) -> String {
        let mut q = String::from("fragment F0 on ApiToken { id name }\n");
        for i in 1..=levels {
            q.push_str(&format!(
                "fragment F{i} on ApiToken {{ ...F{} ...F{} }}\n",
                i - 1,
                i - 1
            ));
        }
        q.push_str(&format!("{{ me {{ ...F{levels} }} }}"));
        q
    }

    fn code(e: &ServerError) -> String {
        e.extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_doubling_fragment_chain_is_refused_in_time_linear_in_its_length() {
        let q = bomb(60);
        let doc = async_graphql::parser::parse_query(&q).unwrap();
        let started = std::time::Instant::now();
        let error = check_expanded_size(&doc).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert_eq!(code(&error), "\"QUERY_TOO_COMPLEX\"");
        // A small chain is fine: 2^5 × 2 fields + 1.
        let doc = async_graphql::parser::parse_query(bomb(5)).unwrap();
        assert!(check_expanded_size(&doc).is_ok());
    }

    #[test]
    fn introspection_is_allowed_a_few_times_not_thousands() {
        let once =
            async_graphql::parser::parse_query("{ __schema { types { name fields { name } } } }")
                .unwrap();
        assert!(check_expanded_size(&once).is_ok());
        let aliased: String = (0..10)
            .map(|i| format!("a{i}: __schema {{ types {{ name }} }} "))
            .collect();
        let many = async_graphql::parser::parse_query(format!("{{ {aliased} }}")).unwrap();
        assert!(check_expanded_size(&many).is_err());
    }

    #[test]
    fn fragment_cycles_are_refused() {
        let doc = async_graphql::parser::parse_query(
            "fragment A on ApiToken { ...B } fragment B on ApiToken { ...A } { me { ...A } }",
        )
        .unwrap();
        let error = check_expanded_size(&doc).unwrap_err();
        assert!(
            error.message.contains("spreads itself"),
            "{}",
            error.message
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing_but_strings_do_not_count() {
        let deep = format!("{}{}", "{ a ".repeat(100), "}".repeat(100));
        assert!(scan_text(&deep).is_err());
        let list = format!("{{ a(x: {}1{}) }}", "[".repeat(70), "]".repeat(70));
        assert!(scan_text(&list).is_err());
        let quoted = format!("{{ a(x: \"{}\") }}", "{[(".repeat(1000));
        assert!(scan_text(&quoted).is_ok());
        let block = format!("{{ a(x: \"\"\"{}\\\"\"\" \"\"\") }}", "{".repeat(1000));
        assert!(scan_text(&block).is_ok());
        let commented = format!("# {}\n{{ a }}", "{".repeat(1000));
        assert!(scan_text(&commented).is_ok());
        assert!(scan_text(&"a ".repeat(MAX_TOKENS + 1)).is_err());
    }
}
