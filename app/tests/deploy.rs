//! The deployment files in `deploy/`, run or checked against the binary (there is no
//! container engine or cluster here):
//!
//! - the compose topology (three instances behind HAProxy on one Redis) run natively, with
//!   `deploy/haproxy.cfg` changed only in its addresses;
//! - the Kubernetes and Cloud Run manifests: every probe path is one the app serves, every
//!   port the one the image listens on, the secret comes from a secret store.

use std::path::PathBuf;
use std::time::Duration;

use cloakroom_testkit::balancer::LoadBalancer;
use cloakroom_testkit::free_port;
use cloakroom_testkit::redis::RedisServer;

mod common;

use common::instances::{call, login, start as app};

fn deploy(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The port the image listens on (the Dockerfile's `PORT`).
fn image_port() -> u16 {
    let dockerfile = deploy("../Dockerfile");
    dockerfile
        .split_whitespace()
        .find_map(|w| w.strip_prefix("PORT="))
        .and_then(|p| p.parse().ok())
        .expect("the Dockerfile sets PORT")
}

/// Every value of `key:` in a YAML text (flow maps included), as written.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let needle = format!("{key}: ");
    text.match_indices(&needle)
        .map(|(at, _)| {
            let rest = &text[at + needle.len()..];
            rest.split([',', '}', '\n'])
                .next()
                .unwrap_or_default()
                .trim()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_probe_what_the_binary_serves() {
    let port = image_port().to_string();
    let app = common::app_with(&[]).await;
    let router = app.router.clone();
    for file in ["kubernetes.yaml", "cloud-run.yaml"] {
        let text = deploy(file);
        let paths = values(&text, "path");
        assert!(
            paths.contains(&"/healthz"),
            "{file}: a liveness probe on /healthz"
        );
        for path in &paths {
            let mut b = cloakroom::testing::Browser::new(router.clone());
            let status = b.send("GET", path, None).await.status;
            assert!(
                [200, 503].contains(&status.as_u16()),
                "{file}: the probe path {path} answers {status}"
            );
        }
        for key in ["containerPort", "port", "targetPort"] {
            for value in values(&text, key) {
                // A Service's own port (80) is the cluster's business; the rest are the image's.
                if key == "port" && text.contains(&format!("- port: {value}")) {
                    continue;
                }
                assert_eq!(value, port, "{file}: {key} {value} is the image's PORT");
            }
        }
        // The secret from a secret store, never a literal.
        let after = text
            .split("name: SESSION_SECRET")
            .nth(1)
            .unwrap_or_else(|| panic!("{file} sets SESSION_SECRET"));
        let next = after.lines().nth(1).unwrap_or_default().trim();
        assert_eq!(
            next, "valueFrom:",
            "{file}: SESSION_SECRET from a secret store"
        );
        assert!(after.contains("secretKeyRef"), "{file}");
    }
    let k8s = deploy("kubernetes.yaml");
    assert_eq!(
        values(&k8s, "path"),
        ["/healthz", "/readyz"],
        "liveness, readiness"
    );
    for kind in ["Deployment", "Service", "PodDisruptionBudget"] {
        assert!(k8s.contains(&format!("kind: {kind}")), "{kind}");
    }
    assert!(k8s.contains("runAsUser: 10001"), "the image's user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_topology_runs_behind_its_haproxy_config() {
    let compose = deploy("compose.yaml");
    for service in ["redis:", "app1:", "app2:", "app3:", "haproxy:"] {
        assert!(
            compose.contains(&format!("\n  {service}")),
            "{service} in compose.yaml"
        );
    }
    assert!(compose.contains("./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg"));
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(app("SESSION_STORE", &url, &[]).await);
    }
    // deploy/haproxy.cfg with its addresses changed, and nothing else.
    let image = image_port();
    let lb_port = free_port();
    let mut config = deploy("haproxy.cfg").replace(
        &format!("bind *:{image}"),
        &format!("bind 127.0.0.1:{lb_port}"),
    );
    for (i, (_, port)) in instances.iter().enumerate() {
        let name = format!("app{}", i + 1);
        config = config.replace(
            &format!("{name} {name}:{image}"),
            &format!("{name} 127.0.0.1:{port}"),
        );
    }
    assert!(
        !config.contains(&format!(":{image}")),
        "every address changed:\n{config}"
    );
    let Some(lb) = LoadBalancer::with_config(&config, lb_port).await else {
        return;
    };
    // HAProxy marks the instances up after its first checks.
    let started = std::time::Instant::now();
    while call(lb.port, "GET", "/healthz", None, None).await.status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "HAProxy serves"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cookie = login(lb.port, "dora").await;
    for _ in 0..6 {
        let profile = call(lb.port, "GET", "/api/profile", Some(&cookie), None).await;
        assert_eq!(profile.status, 200, "every instance knows the session");
    }
    // One instance dies; HAProxy sends its requests to the others.
    let (mut dead, _) = instances.remove(0);
    dead.kill().await.expect("kill an instance");
    for _ in 0..12 {
        let profile = call(lb.port, "GET", "/api/profile", Some(&cookie), None).await;
        assert_eq!(profile.status, 200, "{}", profile.body);
    }
}

/// The alert rules in `deploy/alerts.yaml` are valid (`promtool check rules`), and every
/// metric they watch is one the app exports.
#[tokio::test]
async fn alert_rules_pass_promtool_and_watch_real_metrics() {
    let Some(promtool) = cloakroom_testkit::require("promtool", "prometheus") else {
        return;
    };
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/alerts.yaml");
    let checked = std::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("run promtool");
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let app = common::app_with(&[]).await;
    let scrape = cloakroom::testing::Browser::new(app.router)
        .send("GET", "/metrics", None)
        .await
        .body;
    let text = deploy("alerts.yaml");
    for name in text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("cloakroom_"))
    {
        let sample = name.trim_end_matches("_bucket");
        assert!(
            scrape.contains(sample),
            "an alert watches {name}, not in /metrics"
        );
    }
}
