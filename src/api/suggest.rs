//! "Did you mean …?" for an input object's unknown field. async-graphql's validation suggests names for
//! unknown fields and arguments, but says only `unknown field "epochz" of type "HyperparametersInput"`
//! for an input object; this extension adds the nearest field of that type to the message.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::registry::MetaType;
use async_graphql::{ServerError, ValidationResult};

use crate::domain::closest;

/// The extension that adds the suggestion.
pub struct Suggestions;

impl ExtensionFactory for Suggestions {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Suggestions)
    }
}

#[async_trait::async_trait]
impl Extension for Suggestions {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|mut errors| {
            for error in &mut errors {
                let fields = |type_name: &str| match ctx.schema_env.registry.types.get(type_name) {
                    Some(MetaType::InputObject { input_fields, .. }) => {
                        input_fields.keys().cloned().collect()
                    }
                    _ => Vec::new(),
                };
                if let Some(suggestion) = suggestion(&error.message, fields) {
                    error.message.push_str(&suggestion);
                }
            }
            errors
        })
    }
}

/// `. Did you mean "epochs"?` for a message about an unknown field `epochz` of an input type that has
/// `epochs`; `None` for any other message, or when no field is near.
fn suggestion(message: &str, fields_of: impl Fn(&str) -> Vec<String>) -> Option<String> {
    let rest = &message[message.find("unknown field \"")? + "unknown field \"".len()..];
    let (unknown, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(" of type \"")?;
    let (type_name, _) = rest.split_once('"')?;
    let fields = fields_of(type_name);
    let near = closest(unknown, fields.iter().map(String::as_str))?;
    Some(format!(". Did you mean \"{near}\"?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_input_field_gets_the_nearest_name() {
        let fields = |t: &str| {
            assert_eq!(t, "HyperparametersInput");
            vec!["epochs".to_string(), "batchSize".to_string()]
        };
        let message = "Invalid value for argument \"input.hyperparameters\", unknown field \"epochz\" of type \"HyperparametersInput\"";
        assert_eq!(
            suggestion(message, fields).as_deref(),
            Some(". Did you mean \"epochs\"?")
        );
        assert_eq!(
            suggestion(
                "Invalid value for argument \"x\", unknown field \"zzzzzzzz\" of type \"HyperparametersInput\"",
                fields
            ),
            None
        );
        assert_eq!(
            suggestion("Unknown field \"jobz\" on type \"QueryRoot\"", fields),
            None
        );
    }
}
