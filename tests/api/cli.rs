//! The `kiln` binary's own commands.

use std::process::Command;

use crate::helpers::separable_text_jsonl;

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

#[test]
fn kiln_train_trains_a_local_file_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("prompts.jsonl");
    std::fs::write(&data, separable_text_jsonl(60, 2)).unwrap();
    let output = dir.path().join("model");

    let run = kiln()
        .args(["train", "--epochs", "2", "--max-seq-length", "16", "--data"])
        .arg(&data)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("epoch 2: train loss"), "{stderr}");
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "kiln.json",
    ] {
        assert!(output.join(file).is_file(), "{file} missing");
    }
}

#[test]
fn kiln_train_refuses_an_invalid_file_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.csv");
    std::fs::write(&data, "a,b,label\n1,2,x\n3,oops,y\n").unwrap();

    let run = kiln()
        .args(["train", "--data"])
        .arg(&data)
        .output()
        .unwrap();

    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("bad.csv:3: feature \"b\" is not a number"),
        "{stderr}"
    );
}

#[test]
fn kiln_schema_prints_the_checked_in_schema() {
    let run = kiln().arg("schema").output().unwrap();
    assert!(run.status.success());
    let printed = String::from_utf8(run.stdout).unwrap();
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap();
    assert!(
        printed == checked_in,
        "`kiln schema` differs from schema.graphql"
    );
}
