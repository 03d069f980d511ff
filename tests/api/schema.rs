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
