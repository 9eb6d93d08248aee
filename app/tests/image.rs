//! The image, run the way it runs (there is no container engine here): the binary started as
//! the Dockerfile's runtime stage starts it, read from the Dockerfile itself: its `USER` (a
//! non-root uid; this test runs as root, which could write anywhere), its `ENV` (production
//! mode, the data folder), its `ENTRYPOINT` and `CMD`, from a working directory that user
//! cannot write, with nothing else in the environment but a secret. It must serve, pass its
//! own health probe, and keep a session across a restart.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cloakroom_testkit::http::{request, wait_healthy};
use cloakroom_testkit::{free_port, in_ci, temp_dir};

mod common;

/// What the Dockerfile's runtime stage (after its last `FROM`) says.
struct Runtime {
    uid: u32,
    env: Vec<(String, String)>,
    command: Vec<String>,
}

fn json_words(line: &str) -> Vec<String> {
    serde_json::from_str(line.trim()).expect("an exec-form (JSON) instruction")
}

fn runtime_stage() -> Runtime {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
    let text = std::fs::read_to_string(file).expect("the Dockerfile");
    let stage = text.rsplit("\nFROM ").next().expect("a runtime stage");
    let (mut uid, mut env, mut entry, mut cmd) = (None, Vec::new(), Vec::new(), Vec::new());
    for line in stage.lines() {
        if let Some(user) = line.strip_prefix("USER ") {
            uid = Some(user.trim().parse().expect("USER is a numeric uid"));
        } else if let Some(pairs) = line.strip_prefix("ENV ") {
            for pair in pairs.split_whitespace() {
                let (k, v) = pair.split_once('=').expect("ENV key=value");
                env.push((k.to_owned(), v.to_owned()));
            }
        } else if let Some(words) = line.strip_prefix("ENTRYPOINT ") {
            entry = json_words(words);
        } else if let Some(words) = line.strip_prefix("CMD ") {
            cmd = json_words(words);
        }
    }
    assert!(!line_has_workdir(stage), "nothing may depend on a WORKDIR");
    entry.extend(cmd);
    Runtime {
        uid: uid.expect("the runtime stage names a USER"),
        env,
        command: entry,
    }
}

fn line_has_workdir(stage: &str) -> bool {
    stage.lines().any(|l| l.starts_with("WORKDIR "))
}

/// The binary where the image's user can run it (the build folder may not be reachable).
fn installed(dir: &Path) -> PathBuf {
    let bin = dir.join("cloakroom");
    std::fs::copy(env!("CARGO_BIN_EXE_cloakroom"), &bin).expect("copy the binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

struct Image {
    runtime: Runtime,
    bin: PathBuf,
    data: PathBuf,
    workdir: PathBuf,
    port: u16,
}

impl Image {
    /// `docker run IMAGE [args]`: the entrypoint and, without args, the default command.
    fn run(&self, args: &[&str]) -> std::process::Command {
        let words: Vec<&str> = if args.is_empty() {
            self.runtime.command[1..]
                .iter()
                .map(String::as_str)
                .collect()
        } else {
            args.to_vec()
        };
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.args(words)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("SESSION_SECRET", common::SECRET)
            .current_dir(&self.workdir)
            .uid(self.runtime.uid)
            .gid(self.runtime.uid)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.runtime.env {
            let v = match k.as_str() {
                // The volume, and a free port instead of 8080.
                "CLOAKROOM_DATA" => self.data.display().to_string(),
                "PORT" => self.port.to_string(),
                _ => v.clone(),
            };
            cmd.env(k, v);
        }
        cmd
    }

    fn serve(&self) -> tokio::process::Child {
        let mut cmd = tokio::process::Command::from(self.run(&[]));
        cmd.kill_on_drop(true).stdout(Stdio::null());
        cmd.spawn().expect("start the image's command")
    }
}

async fn stop(mut child: tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("a graceful stop in time")
        .expect("an exit status");
    assert!(exit.success(), "SIGTERM is a clean shutdown: {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_serves_as_built_and_keeps_sessions_across_a_restart() {
    // Only root can start a process as another user.
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        assert!(
            !in_ci(),
            "the image test runs as root in CI (it switches user)"
        );
        eprintln!("SKIPPED (not root, not in CI): the image test switches to the image's user");
        return;
    }
    let runtime = runtime_stage();
    assert_ne!(runtime.uid, 0, "the image does not run as root");
    assert_eq!(runtime.command, ["cloakroom", "serve"]);
    let env = |k: &str| {
        runtime
            .env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(env("CLOAKROOM_ENV"), Some("production"));
    assert_eq!(env("HOST"), Some("0.0.0.0"));
    let base = temp_dir("image");
    let (workdir, data) = (base.join("work"), base.join("data"));
    for dir in [&workdir, &data] {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    // The working directory is root's and read-only to the image's user; the volume is theirs.
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&workdir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(&data, Some(runtime.uid), Some(runtime.uid)).expect("chown");
    let image = Image {
        bin: installed(&base),
        runtime,
        data: data.clone(),
        workdir,
        port: free_port(),
    };

    // `docker run IMAGE secret` works: the entrypoint takes any command.
    let secret = image.run(&["secret"]).output().expect("run secret");
    assert!(secret.status.success(), "{secret:?}");
    assert!(String::from_utf8_lossy(&secret.stdout).trim().len() >= 32);

    let app = image.serve();
    wait_healthy(image.port, Duration::from_secs(20))
        .await
        .expect("the image serves");
    let probe = image
        .run(&["healthcheck"])
        .output()
        .expect("run healthcheck");
    assert!(probe.status.success(), "HEALTHCHECK passes: {probe:?}");
    let json = [("content-type", "application/json")];
    let login = request(
        image.port,
        "POST",
        "/api/login",
        &json,
        Some(r#"{"username":"alice"}"#),
    )
    .await
    .expect("log in");
    assert_eq!(login.status, 200, "{}", login.body);
    let cookie = login.cookie().expect("a session cookie");
    assert!(
        cookie.starts_with("__Host-sid="),
        "production cookie: {cookie}"
    );
    stop(app).await;
    assert!(
        std::fs::read_dir(&data).expect("the volume").count() > 0,
        "the store lives in the data folder"
    );

    let app = image.serve();
    wait_healthy(image.port, Duration::from_secs(20))
        .await
        .expect("the image serves again");
    let profile = request(
        image.port,
        "GET",
        "/api/profile",
        &[("cookie", cookie.as_str())],
        None,
    )
    .await
    .expect("profile");
    assert_eq!(
        profile.status, 200,
        "the session survived: {}",
        profile.body
    );
    stop(app).await;
    let after = image
        .run(&["healthcheck"])
        .output()
        .expect("run healthcheck");
    assert!(!after.status.success(), "no instance, no health");
    let _ = std::fs::remove_dir_all(&base);
}
