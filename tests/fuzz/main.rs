//! A bounded fuzz run against a real `kiln serve` process: random and adversarial GraphQL documents,
//! variables and upload bodies, sent for [`RUN_FOR`] while `/healthz` is timed every [`PROBE_EVERY`]
//! and the server's memory is read from `/proc`. It passes when the server answered 99% of probes
//! within [`HEALTHZ_TYPICAL`] and every probe within [`HEALTHZ_WORST`] (a starved runtime shows as
//! seconds; a single slow sample on a busy two-core machine is scheduling noise, not a defect),
//! stayed under [`RSS_LIMIT`], and is still alive and serving at the end.
//!
//! It is its own test binary so that it runs alone, not beside the other tests' training jobs.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const RUN_FOR: Duration = Duration::from_secs(20);
const PROBE_EVERY: Duration = Duration::from_millis(50);
const HEALTHZ_TYPICAL: Duration = Duration::from_millis(100);
const HEALTHZ_WORST: Duration = Duration::from_secs(1);
const RSS_LIMIT: u64 = 400 * 1024 * 1024;
const TOKEN: &str = "kiln_fuzz_admin_token_0123456789abcdef";

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("serve")
        .env("KILN_BIND", format!("127.0.0.1:{port}"))
        .env(
            "KILN_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("kiln.db").display()),
        )
        .env("KILN_STORAGE_URL", dir.path().join("objects"))
        .env("KILN_WORK_DIR", dir.path().join("work"))
        .env("KILN_WORKERS", "0")
        .env("KILN_ADMIN_TOKEN", TOKEN)
        .env("KILN_HTTP_TIMEOUT_SECONDS", "5")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// A number from `/proc/<pid>/status` (`VmRSS` in KiB, `Threads`).
fn status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0)
}

fn rss(pid: u32) -> u64 {
    status(pid, "VmRSS:") * 1024
}

const FIELDS: [&str; 12] = [
    "me { id name role createdAt }",
    "jobs(first: 100) { totalCount nodes { id metrics(last: 10000) { value } } }",
    "datasets { edges { cursor node { id errors { message } } } }",
    "models(first: 50) { nodes { versions { id } } }",
    "job(id: \"x\") { id }",
    "__schema { types { name fields { name } } }",
    "__typename",
    "jobs(status: QUEUED, modelName: \"m\") { pageInfo { hasNextPage } }",
    "dataset(id: \"\\u0000\") { id }",
    "model(name: \"../../etc\") { name }",
    "jobs(first: -1) { totalCount }",
    "jobs(after: \"not a cursor\") { totalCount }",
];

const TOKENS: [&str; 24] = [
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "...",
    "@skip(if: true)",
    "query",
    "mutation",
    "subscription",
    "fragment",
    "on",
    "me",
    "jobs",
    ":",
    "$v",
    "\"s\"",
    "1",
    "-9999999999999",
    "null",
    "__schema",
    "#",
    "\n",
];

/// One random document, most of them hostile.
fn document(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0 => {
            let levels = rng.random_range(5..40);
            let mut q = String::from("fragment F0 on ApiToken { id name }\n");
            for i in 1..=levels {
                q.push_str(&format!(
                    "fragment F{i} on ApiToken {{ ...F{} ...F{} }}\n",
                    i - 1,
                    i - 1
                ));
            }
            q + &format!("{{ me {{ ...F{levels} }} }}")
        }
        1 => {
            let depth = rng.random_range(10..50_000);
            let open = ["{ me ", "[", "(a: "][rng.random_range(0..3)];
            format!("{}{}", open.repeat(depth), "}".repeat(depth))
        }
        2 => {
            let n = rng.random_range(10..3000);
            let field = FIELDS[rng.random_range(0..FIELDS.len())];
            let aliases: String = (0..n).map(|i| format!("a{i}: {field} ")).collect();
            format!("{{ {aliases} }}")
        }
        3 => {
            let n = rng.random_range(1..2000);
            format!("{{ me {{ id {} }} }}", "@skip(if: false) ".repeat(n))
        }
        4 => {
            let len = rng.random_range(1..200_000);
            let junk: String = (0..len)
                .map(|_| char::from_u32(rng.random_range(0..0x11_000)).unwrap_or('\u{0}'))
                .collect();
            format!("{{ jobs(modelName: {junk:?}) {{ totalCount }} }}")
        }
        5 | 6 => {
            let n = rng.random_range(1..5000);
            (0..n)
                .map(|_| TOKENS[rng.random_range(0..TOKENS.len())])
                .collect::<Vec<_>>()
                .join(" ")
        }
        _ => {
            let n = rng.random_range(1..6);
            let fields: Vec<&str> = (0..n)
                .map(|_| FIELDS[rng.random_range(0..FIELDS.len())])
                .collect();
            format!("{{ {} }}", fields.join(" "))
        }
    }
}

/// Variables that are deeply nested or large.
fn variables(rng: &mut StdRng) -> serde_json::Value {
    match rng.random_range(0..4) {
        0 => {
            let depth = rng.random_range(1..5000);
            serde_json::from_str(&format!("{}1{}", "[".repeat(depth), "]".repeat(depth)))
                .unwrap_or(json!(null))
        }
        1 => {
            json!({ "first": rng.random::<i64>(), "after": "x".repeat(rng.random_range(0..100_000)) })
        }
        _ => json!({}),
    }
}

/// A multipart body of random shape: parts out of order, too large, unnamed, unmapped, many.
fn multipart(rng: &mut StdRng) -> (String, Vec<u8>) {
    let boundary = "fuzzboundary";
    let mut body = Vec::new();
    let parts = rng.random_range(0..40);
    for i in 0..parts {
        let name = match rng.random_range(0..5) {
            0 => "operations".to_string(),
            1 => "map".to_string(),
            _ => i.to_string(),
        };
        let size = match rng.random_range(0..6) {
            0 => rng.random_range(1_000_000..1_600_000),
            _ => rng.random_range(0..2000),
        };
        let content: Vec<u8> = match name.as_str() {
            "operations" if rng.random_bool(0.5) => json!({
                "query": "mutation($f: Upload!) { uploadDataset(file: $f, name: \"fuzz\") { id status } }",
                "variables": { "f": null }
            })
            .to_string()
            .into_bytes(),
            "map" if rng.random_bool(0.5) => format!("{{\"{}\": [\"variables.f\"]}}", rng.random_range(0..40)).into_bytes(),
            _ => (0..size).map(|_| rng.random::<u8>()).collect(),
        };
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f{i}.jsonl\"\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&content);
        body.extend_from_slice(b"\r\n");
    }
    if rng.random_bool(0.8) {
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    }
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn fuzz(url: String, seed: u64, until: Instant) -> usize {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent = 0;
    while Instant::now() < until {
        let request = client
            .post(format!("{url}/graphql"))
            .header("authorization", format!("Bearer {TOKEN}"));
        let request = if rng.random_bool(0.25) {
            let (content_type, body) = multipart(&mut rng);
            request.header("content-type", content_type).body(body)
        } else {
            request.json(&json!({ "query": document(&mut rng), "variables": variables(&mut rng) }))
        };
        if let Ok(response) = request.send().await {
            let _ = response.bytes().await;
        }
        sent += 1;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_hostile_requests_leave_kiln_responsive_and_within_memory() {
    let server = start_server();
    let pid = server.child.id();
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{}/healthz", server.url)).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "kiln did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let baseline = rss(pid);

    let until = Instant::now() + RUN_FOR;
    // The fuzzers run on a runtime of their own, at a lower scheduling priority: on a real deployment
    // hostile clients are other machines, so making their documents should not take CPU from kiln or
    // from the probe that times it.
    let url = server.url.clone();
    let fuzzers = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .on_thread_start(|| {
                // SAFETY: setpriority with who = 0 changes only the calling thread's nice value.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
            })
            .build()
            .unwrap();
        runtime.block_on(async move {
            let tasks: Vec<_> = (0..3)
                .map(|seed| tokio::spawn(fuzz(url.clone(), seed, until)))
                .collect();
            let mut sent = 0;
            for task in tasks {
                sent += task.await.unwrap();
            }
            sent
        })
    });
    let mut timings = Vec::new();
    let mut peak = baseline;
    let mut threads = 0;
    while Instant::now() < until {
        let sent_at = Instant::now();
        let response = tokio::time::timeout(
            Duration::from_secs(5),
            client.get(format!("{}/healthz", server.url)).send(),
        )
        .await;
        let took = sent_at.elapsed();
        assert!(
            matches!(&response, Ok(Ok(r)) if r.status() == 200),
            "/healthz failed after {took:?}: {response:?}"
        );
        timings.push(took);
        peak = peak.max(rss(pid));
        threads = threads.max(status(pid, "Threads:"));
        tokio::time::sleep(PROBE_EVERY).await;
    }
    let sent = fuzzers.join().unwrap();
    timings.sort();
    let p50 = timings[timings.len() / 2];
    let p99 = timings[timings.len() * 99 / 100];
    let slowest = timings[timings.len() - 1];
    println!(
        "{sent} fuzz requests, {} probes: /healthz p50 {p50:?} p99 {p99:?} slowest {slowest:?}, \
         RSS {} → peak {} MiB, at most {threads} threads",
        timings.len(),
        baseline / (1 << 20),
        peak / (1 << 20)
    );
    assert!(
        p99 < HEALTHZ_TYPICAL,
        "/healthz p99 was {p99:?} (limit {HEALTHZ_TYPICAL:?})"
    );
    assert!(
        slowest < HEALTHZ_WORST,
        "/healthz took {slowest:?} at worst (limit {HEALTHZ_WORST:?})"
    );
    assert!(
        peak < RSS_LIMIT,
        "kiln's memory peaked at {} MiB",
        peak / (1 << 20)
    );
    let me: serde_json::Value = client
        .post(format!("{}/graphql", server.url))
        .bearer_auth(TOKEN)
        .json(&json!({ "query": "{ me { role } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["data"]["me"]["role"], "admin", "{me}");
}
