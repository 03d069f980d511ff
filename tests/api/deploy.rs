//! What deploys kiln, checked without a Docker daemon: docker-compose.yml parsed (with a real YAML
//! parser) and checked service by service, the Dockerfile's stages, user and health check, and every
//! `KILN_*` variable they set being a setting kiln has.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use serde_json::Value;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A YAML file as JSON, read by PyYAML (which `transformers` brings into scripts/test's Python).
fn yaml(path: &Path) -> Value {
    let python = std::env::var_os("KILN_TEST_PYTHON")
        .map_or_else(|| "python3".into(), std::path::PathBuf::from);
    let output = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{} does not parse: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn settings() -> BTreeSet<String> {
    kiln::config::file::settings(&kiln::cli::Cli::command())
}

/// The variables `${NAME…}` a compose file interpolates.
fn interpolated(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
            Some(rest[..end].to_string())
        })
        .collect()
}

#[test]
fn docker_compose_runs_the_production_topology_with_real_settings() {
    let path = repository().join("docker-compose.yml");
    let compose = yaml(&path);
    let services = compose["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "api",
            "minio",
            "minio-bucket",
            "postgres",
            "redis",
            "worker"
        ])
    );
    let known = settings();

    // Every long-running service has a health check; what kiln needs is healthy before it starts.
    for (name, service) in services {
        if name != "minio-bucket" {
            assert!(
                service["healthcheck"]["test"].is_array(),
                "{name} has no health check"
            );
        }
    }
    let api = &services["api"];
    assert_eq!(
        api["command"],
        serde_json::json!(["serve", "--workers", "0"])
    );
    assert_eq!(api["ports"], serde_json::json!(["8000:8000"]));
    assert_eq!(api["build"], ".");
    for dependency in ["postgres", "redis"] {
        assert_eq!(
            api["depends_on"][dependency]["condition"],
            "service_healthy"
        );
    }
    assert_eq!(
        api["depends_on"]["minio-bucket"]["condition"],
        "service_completed_successfully"
    );
    let worker = &services["worker"];
    assert_eq!(worker["command"], serde_json::json!(["worker"]));
    assert_eq!(worker["deploy"]["replicas"], 2);
    assert_eq!(worker["image"], api["image"]);
    assert_eq!(worker["depends_on"]["api"]["condition"], "service_healthy");
    // The workers' health check asks the address their metrics are served on.
    let worker_bind = worker["environment"]["KILN_METRICS_BIND"].as_str().unwrap();
    let port = worker_bind.rsplit(':').next().unwrap();
    assert!(
        worker["healthcheck"]["test"]
            .to_string()
            .contains(&format!(":{port}/healthz")),
        "{}",
        worker["healthcheck"]
    );
    // The bucket kiln stores into is the one made at start.
    let storage = api["environment"]["KILN_STORAGE_URL"].as_str().unwrap();
    let bucket = storage
        .strip_prefix("s3://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert!(
        services["minio-bucket"]["entrypoint"]
            .to_string()
            .contains(&format!("local/{bucket}")),
        "the bucket {bucket} is not created"
    );

    // Every KILN_* variable set is a kiln setting; the shared ones reach both kinds of process.
    for name in ["api", "worker"] {
        let environment = services[name]["environment"].as_object().unwrap();
        for variable in environment.keys() {
            assert!(
                known.contains(variable),
                "{name} sets {variable}, which is not a kiln setting"
            );
        }
        for needed in [
            "KILN_DATABASE_URL",
            "KILN_STORAGE_URL",
            "KILN_REDIS_URL",
            "KILN_ADMIN_TOKEN",
        ] {
            assert!(environment.contains_key(needed), "{name} lacks {needed}");
        }
        assert!(
            environment["KILN_DATABASE_URL"]
                .as_str()
                .unwrap()
                .contains("@postgres:5432/"),
            "{name} does not reach the postgres service"
        );
    }

    // Named volumes: each one used is declared, each one declared is used.
    let declared: BTreeSet<&str> = compose["volumes"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut used = BTreeSet::new();
    for service in services.values() {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_string();
            if !source.starts_with('.') && !source.starts_with('/') {
                used.insert(source);
            }
        }
    }
    let used: BTreeSet<&str> = used.iter().map(String::as_str).collect();
    assert_eq!(used, declared);

    // What it interpolates is what .env.example gives, and .env.example's KILN_* are settings.
    let text = std::fs::read_to_string(&path).unwrap();
    let example = std::fs::read_to_string(repository().join(".env.example")).unwrap();
    let given: BTreeSet<String> = example
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap().to_string())
        .collect();
    assert_eq!(
        interpolated(&text),
        given,
        ".env.example and docker-compose.yml differ"
    );
    for variable in given.iter().filter(|v| v.starts_with("KILN_")) {
        assert!(known.contains(variable), ".env.example sets {variable}");
    }
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_unprivileged_in_another() {
    let text = std::fs::read_to_string(repository().join("Dockerfile")).unwrap();
    let instructions: Vec<(String, String)> = text
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (word, rest) = l.split_once(' ').unwrap_or((l, ""));
            (word.to_ascii_uppercase(), rest.trim().to_string())
        })
        .collect();
    let stages: Vec<&String> = instructions
        .iter()
        .filter(|(w, _)| w == "FROM")
        .map(|(_, rest)| rest)
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].ends_with(" AS build"), "{stages:?}");
    let runtime: &[(String, String)] = {
        let at = instructions.iter().rposition(|(w, _)| w == "FROM").unwrap();
        &instructions[at..]
    };
    let find = |word: &str| {
        runtime
            .iter()
            .filter(|(w, _)| w == word)
            .map(|(_, rest)| rest.as_str())
            .collect::<Vec<_>>()
    };
    assert!(
        find("COPY").iter().any(|c| c.starts_with("--from=build ")),
        "the runtime copies the built binary"
    );
    let user = find("USER");
    assert!(
        matches!(user.as_slice(), [u] if *u != "root" && *u != "0"),
        "{user:?}"
    );
    assert!(
        find("HEALTHCHECK").iter().any(|h| h.contains("/healthz")),
        "no health check on /healthz"
    );
    assert_eq!(find("ENTRYPOINT"), ["[\"kiln\"]"]);
    // The settings the image sets are kiln's.
    let known = settings();
    for env in find("ENV") {
        for pair in env.split_whitespace() {
            let name = pair.split('=').next().unwrap();
            assert!(known.contains(name), "the Dockerfile sets {name}");
        }
    }
    // What the build stage copies exists.
    for (_, rest) in instructions.iter().filter(|(w, _)| w == "COPY") {
        if rest.starts_with("--from") {
            continue;
        }
        let mut parts: Vec<&str> = rest.split_whitespace().collect();
        parts.pop();
        for source in parts {
            assert!(repository().join(source).exists(), "COPY {source}: missing");
        }
    }
}

/// Checks Kubernetes objects (YAML or JSON files) against the Kubernetes 1.33 OpenAPI schemas with
/// PyPI's `kubernetes-validate`, strictly (an unknown field is an error). `None` when the tool is
/// missing and the tests may skip.
pub(crate) fn kubernetes_validate(paths: &[std::path::PathBuf]) -> Option<()> {
    let python = std::env::var_os("KILN_TEST_PYTHON")
        .map_or_else(|| "python3".into(), std::path::PathBuf::from);
    let present = std::process::Command::new(&python)
        .args(["-c", "import kubernetes_validate"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var_os("KILN_TEST_REQUIRE_TOOLS").is_none(),
            "KILN_TEST_REQUIRE_TOOLS is set and {} has no kubernetes_validate (scripts/test installs it)",
            python.display()
        );
        eprintln!("SKIPPED: kubernetes-validate is not installed (scripts/test installs it)");
        return None;
    }
    let output = std::process::Command::new(&python)
        .args(["-m", "kubernetes_validate", "-k", "1.33.0", "--strict"])
        .args(paths)
        .output()
        .expect("python runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "kubernetes-validate refused:\n{said}"
    );
    // Every object was checked (a file of no objects would pass silently).
    assert!(
        said.matches(" passed for resource ").count() >= paths.len(),
        "{said}"
    );
    Some(())
}

#[test]
fn the_kubernetes_manifests_validate_and_set_real_settings() {
    let dir = repository().join("deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "api.yaml",
            "configmap.yaml",
            "rbac.yaml",
            "secret.example.yaml",
            "worker.yaml"
        ]
    );
    kubernetes_validate(&files);

    // Every KILN_* variable the ConfigMap, the Secret template and the containers set is a setting.
    let known = settings();
    let read = |name: &str| -> Vec<Value> {
        let python = std::env::var_os("KILN_TEST_PYTHON")
            .map_or_else(|| "python3".into(), std::path::PathBuf::from);
        let output = std::process::Command::new(python)
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            ])
            .arg(dir.join(name))
            .output()
            .expect("python runs");
        assert!(output.status.success(), "{name} does not parse");
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let mut set = BTreeSet::new();
    for doc in read("configmap.yaml") {
        set.extend(doc["data"].as_object().unwrap().keys().cloned());
    }
    for doc in read("secret.example.yaml") {
        set.extend(doc["stringData"].as_object().unwrap().keys().cloned());
    }
    for file in ["api.yaml", "worker.yaml"] {
        for doc in read(file) {
            for container in doc["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for env in container["env"].as_array().into_iter().flatten() {
                    set.insert(env["name"].as_str().unwrap().to_string());
                }
            }
        }
    }
    let unknown: Vec<&String> = set.iter().filter(|v| !known.contains(*v)).collect();
    assert!(unknown.is_empty(), "not kiln settings: {unknown:?}");
    assert!(set.contains("KILN_RUNNER") && set.contains("KILN_K8S_IMAGE"));
    // The secret settings job pods read by name are in the Secret.
    let secret: BTreeSet<String> = read("secret.example.yaml")[0]["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for name in kiln::runner::kubernetes::SECRET_SETTINGS {
        assert!(secret.contains(name), "the Secret template lacks {name}");
    }

    // The workers' ServiceAccount may do what the runner does with Jobs and pods, and no more.
    let rbac = read("rbac.yaml");
    let role = rbac.iter().find(|d| d["kind"] == "Role").expect("a Role");
    let rules = role["rules"].as_array().unwrap();
    let verbs = |group: &str, resource: &str| -> BTreeSet<String> {
        rules
            .iter()
            .filter(|r| {
                r["apiGroups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|g| g == group)
                    && r["resources"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x == resource)
            })
            .flat_map(|r| r["verbs"].as_array().unwrap().iter())
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    for verb in ["create", "get", "list", "delete"] {
        assert!(verbs("batch", "jobs").contains(verb), "Jobs: {verb}");
    }
    for verb in ["get", "list"] {
        assert!(verbs("", "pods").contains(verb), "pods: {verb}");
    }
    assert!(
        !rules
            .iter()
            .any(|r| r["verbs"].as_array().unwrap().iter().any(|v| v == "*"))
    );
    let worker = &read("worker.yaml")[0];
    assert_eq!(
        worker["spec"]["template"]["spec"]["serviceAccountName"],
        "kiln-worker"
    );
}
