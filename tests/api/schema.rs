#[test]
fn the_checked_in_schema_matches_the_code() {
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
            .expect("schema.graphql at the repository root");
    assert!(
        checked_in == kiln::api::sdl(),
        "schema.graphql is stale: run `cargo run -- schema > schema.graphql`"
    );
}

/// The hyperparameters are written out in five places: the domain's input and checked structs, the
/// GraphQL input and output types, and `kiln train`'s flags. A field added to one of them and not to
/// the others fails here.
#[test]
fn every_list_of_hyperparameters_names_the_same_fields() {
    use std::collections::BTreeSet;

    let schema = kiln::api::sdl();
    let graphql_input = graphql_fields(&schema, "input HyperparametersInput {");
    let graphql_output = graphql_fields(&schema, "type Hyperparameters {");
    let input = struct_fields::<kiln::domain::HyperparamsInput>();
    let checked = struct_fields::<kiln::domain::Hyperparams>();

    // The checked form keeps early stopping as one optional value of two fields; the output adds
    // whether the class weights are the balanced ones.
    let mut checked_as_input = checked.clone();
    assert!(checked_as_input.remove("earlyStopping"), "{checked:?}");
    checked_as_input.extend(["earlyStoppingPatience".into(), "earlyStoppingMetric".into()]);
    assert_eq!(
        input, checked_as_input,
        "the domain's input and checked hyperparameters"
    );
    assert_eq!(
        graphql_input, input,
        "HyperparametersInput and the domain's input"
    );
    let mut output_as_input = graphql_output.clone();
    assert!(
        output_as_input.remove("balancedClassWeights"),
        "{graphql_output:?}"
    );
    assert_eq!(
        output_as_input, input,
        "Hyperparameters (GraphQL) and the domain's input"
    );

    // `kiln train` has a flag for the common ones (the rest go in --hyperparameters as JSON): each such
    // flag is a hyperparameter, and every other flag is one of these.
    let others: BTreeSet<String> = [
        "data",
        "format",
        "textField",
        "labelField",
        "featureFields",
        "baseModel",
        "hyperparameters",
        "customization",
        "checkpointDir",
        "resume",
        "output",
        "force",
        "hfEndpoint",
        "hfToken",
        "maxTrainMemory",
        "device",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let command = <kiln::cli::TrainArgs as clap::Args>::augment_args(clap::Command::new("train"));
    for flag in command.get_arguments() {
        let name = camel_case(flag.get_id().as_str());
        assert!(
            input.contains(&name) || others.contains(&name),
            "kiln train --{} is neither a hyperparameter nor one of the other flags this test knows",
            flag.get_long().unwrap_or_default()
        );
    }
}

/// The fields of a GraphQL type or input in `schema`, from the line that opens it.
fn graphql_fields(schema: &str, opening: &str) -> std::collections::BTreeSet<String> {
    let body = &schema[schema.find(opening).expect(opening) + opening.len()..];
    let body = &body[..body.find("\n}").unwrap()];
    // Descriptions are between triple quotes; fields are the other lines.
    let mut fields = std::collections::BTreeSet::new();
    let mut in_description = false;
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("\"\"\"") {
            in_description = !(in_description || line.len() > 3 && line.ends_with("\"\"\""));
            continue;
        }
        if !in_description && let Some((name, _)) = line.split_once(':') {
            fields.insert(name.split('(').next().unwrap().trim().to_string());
        }
    }
    fields
}

/// The serde names of a struct's fields, as `Deserialize` asks for them.
fn struct_fields<'de, T: serde::Deserialize<'de>>() -> std::collections::BTreeSet<String> {
    use serde::de::{self, Visitor};

    /// A deserializer that only records the fields a struct asks for.
    struct Fields(Vec<&'static str>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> de::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.extend(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields = Fields(Vec::new());
    let _ = T::deserialize(&mut fields);
    assert!(
        !fields.0.is_empty(),
        "{} is not a struct",
        std::any::type_name::<T>()
    );
    fields.0.iter().map(|f| f.to_string()).collect()
}

fn camel_case(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}
