//! Moving to Cloakroom without logging anyone out: a user logged in on a tutorial-style Express
//! app (express-session + connect-redis) or Flask app (Flask-Session) lands on the Cloakroom
//! app logged in, with their data; logging out there ends the old session. Forged cookies,
//! other secrets, expired and pickled records import nothing. Real Node and Python apps on the
//! same real Redis (installed by `cloakroom_testkit::foreign`).

use std::time::Duration;

use cloakroom_redis::redis;
use cloakroom_testkit::foreign::ForeignApp;
use cloakroom_testkit::free_port;
use cloakroom_testkit::http::{request, wait_healthy, Response};
use cloakroom_testkit::redis::RedisServer;
use tokio::process::Child;

mod common;

use common::instances::call;

/// The Cloakroom app on `redis` with `env` (the import settings).
async fn cloakroom(redis: &RedisServer, env: &[(&str, &str)]) -> (Child, u16) {
    let port = free_port();
    let port_text = port.to_string();
    let url = redis.url();
    let mut vars = vec![("SESSION_STORE", url.as_str())];
    vars.extend_from_slice(env);
    let child = common::spawn_binary(&["serve", "--port", &port_text], &vars);
    wait_healthy(port, Duration::from_secs(15))
        .await
        .expect("the app starts");
    (child, port)
}

/// A call to a foreign app with `cookie`.
async fn foreign(port: u16, method: &str, path: &str, cookie: Option<&str>) -> Response {
    let mut headers = Vec::new();
    if let Some(cookie) = cookie {
        headers.push(("cookie", cookie));
    }
    request(port, method, path, &headers, None)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on the foreign app: {e}"))
}

/// Logs `user` in on a foreign app and counts two page views there: its cookie.
async fn foreign_login(port: u16, user: &str) -> String {
    let login = foreign(port, "POST", &format!("/login?user={user}"), None).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let cookie = login.cookie().expect("the foreign session cookie");
    for _ in 0..2 {
        assert_eq!(
            foreign(port, "GET", "/counter", Some(&cookie)).await.status,
            200
        );
    }
    assert_eq!(
        foreign(port, "GET", "/me", Some(&cookie)).await.json()["views"],
        2
    );
    cookie
}

/// The value of `field` in the only Cloakroom session that has it, as stored (JSON text).
async fn stored_field(redis: &RedisServer, field: &str) -> Option<String> {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sid:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if kind != "hash" {
            continue;
        }
        let value: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg(field)
            .query_async(&mut conn)
            .await
            .unwrap();
        if value.is_some() {
            return value;
        }
    }
    None
}

async fn exists(redis: &RedisServer, key: &str) -> bool {
    redis.command(&["EXISTS", key]).await.starts_with(":1")
}

/// The foreign session's ID, from its record's key (the only one under `prefix`).
async fn only_key(redis: &RedisServer, prefix: &str) -> String {
    let reply = redis.command(&["KEYS", &format!("{prefix}*")]).await;
    let keys: Vec<&str> = reply.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(keys.len(), 1, "{reply}");
    keys[0].to_owned()
}

/// The user on the Cloakroom app with `cookie`: their profile, or the status.
async fn profile(port: u16, cookie: &str) -> Result<(String, Option<String>), u16> {
    let reply = call(port, "GET", "/api/profile", Some(cookie), None).await;
    if reply.status != 200 {
        return Err(reply.status);
    }
    let user = reply.json()["user_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((user, reply.cookie()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_express_user_arrives_logged_in_and_logs_out_of_both() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // The Node app signs with its first secret; Cloakroom knows a newer one too.
    let Some(node) = ForeignApp::express(&redis.url(), "keyboard cat,older").await else {
        return;
    };
    let (_app, port) = cloakroom(
        &redis,
        &[("SESSION_IMPORT_EXPRESS_SECRET", "rotated,keyboard cat")],
    )
    .await;
    let express = foreign_login(node.port, "ada").await;
    let record = only_key(&redis, "sess:").await;

    let (user, ours) = profile(port, &express).await.expect("logged in on arrival");
    assert_eq!(user, "ada");
    assert!(
        stored_field(&redis, "login_time").await.is_some(),
        "as after a login here"
    );
    let ours = ours.expect("the Cloakroom cookie is set");
    assert_eq!(
        stored_field(&redis, "views").await.as_deref(),
        Some("2"),
        "with the counter"
    );
    // From now on the Cloakroom cookie carries the session (the browser sends both).
    let both = format!("{ours}; {express}");
    assert_eq!(profile(port, &both).await.map(|p| p.0), Ok("ada".into()));
    assert!(
        exists(&redis, &record).await,
        "the Node app still serves its routes"
    );
    // Taken over once: the old cookie alone (ours lost, or stolen) imports nothing again.
    assert_eq!(
        profile(port, &express).await,
        Err(401),
        "imported once only"
    );

    // Logging out here ends the Express session too.
    let logout = call(port, "POST", "/api/logout", Some(&both), None).await;
    assert!(logout.status < 300, "{}", logout.body);
    assert!(
        !exists(&redis, &record).await,
        "the Express session is gone"
    );
    assert_eq!(
        foreign(node.port, "GET", "/me", Some(&express))
            .await
            .json()["user"],
        serde_json::Value::Null,
        "the Node app no longer knows the user"
    );
    assert_eq!(
        profile(port, &both).await,
        Err(401),
        "and nothing is imported again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_foreign_and_expired_express_cookies_import_nothing() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let Some(node) = ForeignApp::express(&redis.url(), "keyboard cat").await else {
        return;
    };
    let Some(other) = ForeignApp::express(&redis.url(), "another app's secret").await else {
        return;
    };
    let (_app, port) =
        cloakroom(&redis, &[("SESSION_IMPORT_EXPRESS_SECRET", "keyboard cat")]).await;
    let genuine = foreign_login(node.port, "ada").await;
    // One character of the signature changed.
    let mut forged = genuine.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(profile(port, &forged).await, Err(401), "forged");
    let elsewhere = foreign_login(other.port, "mallory").await;
    assert_eq!(
        profile(port, &elsewhere).await,
        Err(401),
        "signed with another secret"
    );
    assert_eq!(
        profile(port, "connect.sid=garbage%ZZ").await,
        Err(401),
        "malformed"
    );

    assert_eq!(
        profile(port, &genuine).await.map(|p| p.0),
        Ok("ada".into()),
        "the genuine cookie imports"
    );
    // Another genuine session, never imported, its `cookie.expires` moved into the past (the
    // key still there).
    let expiring = foreign_login(node.port, "eve").await;
    let record = {
        let reply = redis.command(&["KEYS", "sess:*"]).await;
        let mut found = None;
        for key in reply.lines().filter(|l| l.starts_with("sess:")) {
            if redis.command(&["GET", key]).await.contains("\"eve\"") {
                found = Some(key.to_owned());
            }
        }
        found.expect("eve's record")
    };
    let text = redis.command(&["GET", &record]).await;
    let json = text.lines().nth(1).unwrap();
    let mut session: serde_json::Value = serde_json::from_str(json).unwrap();
    session["cookie"]["expires"] = "2001-01-01T00:00:00.000Z".into();
    redis
        .command(&["SET", &record, &session.to_string(), "EX", "600"])
        .await;
    assert_eq!(profile(port, &expiring).await, Err(401), "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flask_user_arrives_logged_in_signed_or_not_msgpack_or_json() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    for (signer, format) in [(true, "msgpack"), (false, "json")] {
        redis.command(&["FLUSHALL"]).await;
        let Some(flask) = ForeignApp::flask(&redis.url(), "flask secret", signer, format).await
        else {
            return;
        };
        let env: Vec<(&str, &str)> = if signer {
            vec![("SESSION_IMPORT_FLASK_SECRET", "flask secret")]
        } else {
            vec![("SESSION_IMPORT_FLASK", "1")]
        };
        let (_app, port) = cloakroom(&redis, &env).await;
        let cookie = foreign_login(flask.port, "grace").await;
        let record = only_key(&redis, "session:").await;
        let (user, ours) = profile(port, &cookie)
            .await
            .unwrap_or_else(|s| panic!("signer {signer}, {format}: {s}"));
        assert_eq!(user, "grace");
        assert_eq!(stored_field(&redis, "views").await.as_deref(), Some("2"));
        assert_eq!(
            stored_field(&redis, "_permanent").await,
            None,
            "Flask's own flag"
        );
        if signer {
            let forged = cookie.replacen('.', ".x", 1);
            let mut other = call(port, "GET", "/api/profile", Some(&forged), None).await;
            assert_eq!(other.status, 401, "forged: {}", other.body);
            other.body.clear();
        }
        let both = format!("{}; {cookie}", ours.expect("our cookie"));
        let logout = call(port, "POST", "/api/logout", Some(&both), None).await;
        assert!(logout.status < 300, "{}", logout.body);
        assert!(!exists(&redis, &record).await, "the Flask session is gone");
        assert_eq!(
            foreign(flask.port, "GET", "/me", Some(&cookie))
                .await
                .json()["user"],
            serde_json::Value::Null
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pickled_flask_record_is_never_unpickled() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (_app, port) = cloakroom(&redis, &[("SESSION_IMPORT_FLASK", "true")]).await;
    // pickle.dumps({"_user_id": "eve"}, protocol=4), as Flask-Session before 0.7 stored it.
    let pickled: &[u8] =
        b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x08_user_id\x94\x8c\x03eve\x94s.";
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("session:pickledsessionid")
        .arg(pickled)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(profile(port, "session=pickledsessionid").await, Err(401));
    let metrics = call(port, "GET", "/metrics", None, None).await;
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l.starts_with("cloakroom_imports_total{result=\"unreadable\"} 1")),
        "counted: {}",
        metrics.body
    );
    assert!(
        exists(&redis, "session:pickledsessionid").await,
        "left as it was"
    );
}
