//! `examples/redis.rs` end to end against a real Redis: two instances of the example app
//! share the sessions, and "log out everywhere" ends the other browser's session.

#[allow(dead_code)]
#[path = "../examples/redis.rs"]
mod example;

use cloakroom::testing::Browser;
use cloakroom::KeyRing;
use cloakroom_redis::{RedisConfig, RedisStore};
use cloakroom_testkit::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_sessions_and_log_out_everywhere() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let keys = KeyRing::generate().unwrap();
    let instance = || async {
        let store = RedisStore::connect(RedisConfig::new(server.url()))
            .await
            .unwrap();
        example::app(store, keys.clone())
    };
    let (first, second) = (instance().await, instance().await);
    let mut laptop = Browser::new(first.clone());
    assert_eq!(laptop.send("POST", "/login/ada", None).await.status, 200);
    assert_eq!(laptop.send("GET", "/", None).await.body, "ada: visit 1");
    // The same cookie on the other instance: the same session.
    let mut on_second = Browser::new(second.clone());
    on_second.cookie = laptop.cookie.clone();
    assert_eq!(on_second.send("GET", "/", None).await.body, "ada: visit 2");

    let mut phone = Browser::new(second);
    phone.send("POST", "/login/ada", None).await;
    let ended = phone.send("POST", "/logout-everywhere", None).await;
    assert_eq!(ended.body, "ended 1 other session(s)");
    assert_eq!(laptop.send("GET", "/", None).await.body, "nobody: visit 1");
    assert_eq!(phone.send("GET", "/", None).await.body, "ada: visit 1");
}
