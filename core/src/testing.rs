//! The behavioural suite every store must pass, and the test doubles it uses.
//!
//! A store crate runs the whole suite with one line in a test file:
//!
//! ```ignore
//! async fn make_store() -> MyStore { /* a fresh, empty store */ }
//! cloakroom::store_suite!(make_store);
//! ```
//!
//! The suite talks to the store both directly (the contract, with synthetic clocks for expiry)
//! and through a real [`SessionLayer`] in front of an axum router (what handlers see:
//! concurrency, no resurrection, round-trip budget, size limit).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Extension, Path};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{header, Request, StatusCode};
use tower::ServiceExt as _;

use crate::{
    Applied, Changes, KeyRing, Loaded, Millis, Record, Refresh, Session, SessionConfig,
    SessionError, SessionId, SessionKey, SessionLayer, SessionStore, StoreError, StoreStats,
    UserChange, UserSession,
};

pub mod history;
pub mod throughput;

/// Waits (bounded by `within`) until `store` has heard that `key`'s session ended
/// ([`SessionStore::ended_recently`] for a ticket issued at `issued`); whether it did.
pub async fn heard_within(
    store: &dyn SessionStore,
    key: &SessionKey,
    issued: Millis,
    within: Duration,
) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if store.ended_recently(key, issued) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A shared, type-erased store, as the suite passes it around.
pub type DynStore = Arc<dyn SessionStore>;

/// Defines one `#[tokio::test]` per behaviour, each on a fresh store from `$make().await`.
#[macro_export]
macro_rules! store_suite {
    ($make:path) => {
        $crate::store_suite!(@tests $make;
            round_trip_of_typed_values,
            concurrent_increments_are_not_lost,
            concurrent_updates_are_not_lost,
            concurrent_writes_to_different_keys_survive,
            write_racing_destroy_leaves_no_record,
            blind_write_after_destroy_leaves_no_record,
            idle_expiry,
            absolute_expiry,
            refresh_is_throttled,
            a_session_keeps_its_own_expiry,
            renewal_alias_is_read_only_for_the_grace_window,
            privilege_cycle_leaves_no_old_id,
            cycle_through_layer,
            renewal_through_layer,
            revoke_also_ends_aliases,
            every_write_path_honours_the_limits,
            anonymous_sessions_expire_sooner,
            cancelled_login_leaves_one_whole_session,
            per_user_list_and_revoke,
            revoke_others_spares_the_callers_renewed_session,
            size_limit_writes_nothing,
            id_collision_on_create,
            destroy_is_idempotent_and_an_alias_ends_only_itself,
            round_trip_budget,
            flashes_are_shown_once,
            stats_count_live_sessions,
            bad_increment_changes_nothing,
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: $crate::testing::DynStore = ::std::sync::Arc::new($make().await);
                $crate::testing::$name(store).await;
            }
        )*
    };
}

/// A configuration for tests: a fresh key, plain-http cookies.
#[must_use]
pub fn test_config() -> crate::SessionConfigBuilder {
    SessionConfig::builder(KeyRing::generate().expect("OS randomness")).with_secure(false)
}

fn layer(store: DynStore) -> SessionLayer {
    SessionLayer::from_arc(store, test_config().build().expect("valid test config"))
}

/// Two notifications that let a test pause a handler between its load and its write.
#[derive(Default)]
pub struct Gate {
    /// Signalled by the handler once it has loaded the session.
    pub loaded: tokio::sync::Notify,
    /// Signalled by the test to let the handler write.
    pub proceed: tokio::sync::Notify,
}

/// The routes the suite drives. Every handler uses only the public [`Session`] API.
pub fn test_router(layer: SessionLayer, gate: Arc<Gate>) -> Router {
    async fn untouched() -> &'static str {
        "ok"
    }
    async fn append(
        s: Session,
        Path((k, v)): Path<(String, String)>,
    ) -> Result<String, SessionError> {
        let list = s
            .update(&k, |list: Option<Vec<String>>| {
                let mut list = list.unwrap_or_default();
                list.push(v.clone());
                list
            })
            .await?;
        Ok(list.len().to_string())
    }
    async fn degraded(s: Session) -> Result<String, SessionError> {
        let user = s.user().await?;
        Ok(format!("{user:?} {}", s.is_degraded().await))
    }
    async fn show(
        s: Session,
        Path(k): Path<String>,
    ) -> Result<Json<serde_json::Value>, SessionError> {
        Ok(Json(
            s.get::<serde_json::Value>(&k).await?.unwrap_or_default(),
        ))
    }
    async fn put(
        s: Session,
        Path(k): Path<String>,
        Json(v): Json<serde_json::Value>,
    ) -> Result<&'static str, SessionError> {
        s.insert(&k, v).await?;
        Ok("ok")
    }
    async fn incr(s: Session, Path(k): Path<String>) -> Result<String, SessionError> {
        Ok(s.increment(&k, 1).await?.to_string())
    }
    async fn login(s: Session, Path(user): Path<String>) -> Result<&'static str, SessionError> {
        s.cycle_id().await?;
        s.set_user(&user).await?;
        s.insert("login", true).await?;
        Ok("ok")
    }
    async fn logout(s: Session) -> &'static str {
        s.destroy().await;
        "ok"
    }
    async fn slow_put(
        s: Session,
        Extension(gate): Extension<Arc<Gate>>,
        Path(k): Path<String>,
    ) -> Result<&'static str, SessionError> {
        let _ = s.get::<serde_json::Value>(&k).await?;
        gate.loaded.notify_one();
        gate.proceed.notified().await;
        s.insert(&k, "late").await?;
        Ok("ok")
    }
    async fn slow_incr(
        s: Session,
        Extension(gate): Extension<Arc<Gate>>,
        Path(k): Path<String>,
    ) -> Result<String, SessionError> {
        gate.loaded.notify_one();
        gate.proceed.notified().await;
        Ok(s.increment(&k, 1).await?.to_string())
    }
    async fn flash(s: Session, Path(m): Path<String>) -> Result<&'static str, SessionError> {
        s.flash(m).await?;
        Ok("ok")
    }
    async fn flashes(s: Session) -> Result<Json<Vec<String>>, SessionError> {
        Ok(Json(s.take_flashes().await?))
    }
    async fn mine(s: Session) -> Result<Json<Vec<crate::SessionInfo>>, SessionError> {
        Ok(Json(s.user_sessions().await?))
    }
    async fn store_key(s: Session) -> String {
        s.key().await.map(|k| k.to_string()).unwrap_or_default()
    }
    async fn others(s: Session) -> Result<String, SessionError> {
        Ok(s.revoke_other_sessions().await?.to_string())
    }
    async fn cycle(s: Session) -> Result<&'static str, SessionError> {
        s.cycle_id().await?;
        Ok("ok")
    }
    async fn expiry(s: Session, Path(secs): Path<u64>) -> Result<&'static str, SessionError> {
        let idle = std::time::Duration::from_secs(secs);
        s.set_expiry(crate::Expiry::new(idle, idle * 2)).await?;
        Ok("ok")
    }
    async fn whoami(s: Session) -> Result<Json<Option<String>>, SessionError> {
        Ok(Json(s.user().await?))
    }
    Router::new()
        .route("/untouched", get(untouched))
        .route("/show/{k}", get(show))
        .route("/put/{k}", post(put))
        .route("/incr/{k}", post(incr))
        .route("/login/{user}", post(login))
        .route("/logout", post(logout))
        .route("/slow-put/{k}", post(slow_put))
        .route("/slow-incr/{k}", post(slow_incr))
        .route("/flash/{m}", post(flash))
        .route("/flashes", get(flashes))
        .route("/mine", get(mine))
        .route("/key", get(store_key))
        .route("/others", post(others))
        .route("/cycle", post(cycle))
        .route("/whoami", get(whoami))
        .route("/expiry/{secs}", post(expiry))
        .route("/degraded", get(degraded))
        .route("/append/{k}/{v}", post(append))
        .layer(Extension(gate))
        .layer(layer)
}

/// A response as the tests see it.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Every `Set-Cookie` header.
    pub set_cookies: Vec<String>,
    /// The body as text.
    pub body: String,
    /// All headers.
    pub headers: http::HeaderMap,
}

/// A cookie-keeping client for a router (one "browser").
#[derive(Clone)]
pub struct Browser {
    router: Router,
    /// The `name=value` cookie pair it sends, if any.
    pub cookie: Option<String>,
}

impl Browser {
    /// A browser with no cookie.
    #[must_use]
    pub fn new(router: Router) -> Self {
        Self {
            router,
            cookie: None,
        }
    }

    /// Sends a request; keeps whatever cookie the response sets or removes.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        json: Option<serde_json::Value>,
    ) -> Reply {
        let reply = self.send_raw(method, path, json, self.cookie.clone()).await;
        self.keep_cookie(&reply);
        reply
    }

    /// Sends a request with a body of any content type (forms, malformed JSON, …); keeps
    /// the cookie like [`Browser::send`].
    pub async fn send_body(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: impl Into<String>,
    ) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(cookie) = &self.cookie {
            builder = builder.header(header::COOKIE, cookie);
        }
        let reply = self
            .request(
                builder
                    .body(Body::from(body.into()))
                    .expect("valid test request"),
            )
            .await;
        self.keep_cookie(&reply);
        reply
    }

    /// Applies the response's `Set-Cookie` headers to the cookies it sends, by name (a jar:
    /// the session cookie and the fallback ticket live side by side).
    fn keep_cookie(&mut self, reply: &Reply) {
        let mut jar: Vec<(String, String)> = self
            .cookie
            .as_deref()
            .unwrap_or_default()
            .split("; ")
            .filter_map(|pair| pair.split_once('='))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        for set in &reply.set_cookies {
            let pair = set.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            jar.retain(|(n, _)| n != name);
            if !set.contains("Max-Age=0") {
                jar.push((name.to_owned(), value.to_owned()));
            }
        }
        self.cookie = (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        });
    }

    /// Sends a request with an explicit `Cookie` header; changes nothing in the browser.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        json: Option<serde_json::Value>,
        cookie: Option<String>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(cookie) = cookie {
            builder = builder.header(header::COOKIE, cookie);
        }
        let body = match json {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.request(builder.body(body).expect("valid test request"))
            .await
    }

    /// Sends a prepared request as is.
    pub async fn request(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let set_cookies = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .collect();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        Reply {
            status,
            set_cookies,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            headers,
        }
    }
}

fn browser(store: DynStore) -> Browser {
    Browser::new(test_router(layer(store), Arc::default()))
}

const T0: Millis = 1_800_000_000_000;

fn key() -> SessionKey {
    SessionId::random().expect("OS randomness").key()
}

/// A fresh key that `store` accepts as the target of a cycle from `old` (a sharded store
/// keeps a cycle on one shard: [`SessionStore::can_cycle_to`]).
fn near(store: &DynStore, old: &SessionKey) -> SessionKey {
    loop {
        let new = key();
        if store.can_cycle_to(old, &new) {
            return new;
        }
    }
}

fn record(now: Millis, idle: Millis, absolute: Millis) -> Record {
    Record::new(now, now + idle, now + absolute)
}

fn set(pairs: &[(&str, &str)]) -> Changes {
    Changes {
        set: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Changes::default()
    }
}

async fn load(store: &DynStore, k: &SessionKey, now: Millis) -> Option<Loaded> {
    store.load(k, now, None).await.expect("load")
}

/// The user's sessions, or `None` from a store without the per-user index (an optional
/// capability: [`SessionStore::list_user`]).
async fn listed(store: &DynStore, user: &str, now: Millis) -> Option<Vec<UserSession>> {
    match store.list_user(user, now).await {
        Ok(list) => Some(list),
        Err(StoreError::Unsupported(_)) => None,
        Err(e) => panic!("list_user: {e}"),
    }
}

/// Whether `store` keeps the per-user index. A store without it must say so from both
/// methods: half an index would let "log out everywhere" miss sessions silently.
async fn has_user_index(store: &DynStore) -> bool {
    let now = crate::now_millis();
    let lists = listed(store, "nobody", now).await.is_some();
    let destroys = !matches!(
        store.destroy_user("nobody", None, now).await,
        Err(StoreError::Unsupported(_))
    );
    assert_eq!(lists, destroys, "list_user and destroy_user come together");
    lists
}

/// Typed values survive a round trip through the layer and the store.
pub async fn round_trip_of_typed_values(store: DynStore) {
    let mut b = browser(store.clone());
    let value = serde_json::json!({"name": "Zoë", "n": 3, "tags": ["a", "b"], "none": null});
    assert_eq!(
        b.send("POST", "/put/profile", Some(value.clone()))
            .await
            .status,
        200
    );
    assert!(b.cookie.is_some(), "a new session sets a cookie");
    let shown = b.send("GET", "/show/profile", None).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&shown.body).unwrap(),
        value
    );
    // The contract directly: fields and metadata come back as stored.
    let k = key();
    let mut r = record(T0, 1000, 5000);
    r.fields.insert("a".into(), "\"x\"".into());
    store.create(&k, &r).await.unwrap();
    let loaded = load(&store, &k, T0 + 1).await.unwrap();
    assert_eq!(loaded.record.fields, r.fields);
    assert_eq!(loaded.record.created, T0);
    assert_eq!(loaded.key, k);
}

async fn concurrently<F, Fut>(n: usize, f: F) -> Vec<Reply>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("bounded")
                .expect("task"),
        );
    }
    out
}

/// 200 concurrent increments on one session end at exactly 200.
pub async fn concurrent_increments_are_not_lost(store: DynStore) {
    let mut b = browser(store);
    b.send("POST", "/put/seed", Some(serde_json::json!(1)))
        .await;
    let replies = concurrently(200, |_| {
        let b = b.clone();
        async move {
            b.send_raw("POST", "/incr/hits", None, b.cookie.clone())
                .await
        }
    })
    .await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "all increments succeed"
    );
    let mut seen: Vec<i64> = replies.iter().map(|r| r.body.parse().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=200).collect::<Vec<_>>(),
        "each increment saw a distinct value"
    );
    assert_eq!(b.send("GET", "/show/hits", None).await.body, "200");
}

/// `Session::update` is a compare-and-set in the store: concurrent updates of one
/// structured value (a list every request appends to) all survive, and a stale expectation
/// writes nothing.
pub async fn concurrent_updates_are_not_lost(store: DynStore) {
    let mut b = browser(store.clone());
    b.send("POST", "/put/seed", Some(serde_json::json!(1)))
        .await;
    let replies = concurrently(20, |i| {
        let b = b.clone();
        async move {
            b.send_raw(
                "POST",
                &format!("/append/list/v{i}"),
                None,
                b.cookie.clone(),
            )
            .await
        }
    })
    .await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "every update succeeds: {:?}",
        replies
            .iter()
            .map(|r| (r.status, r.body.clone()))
            .collect::<Vec<_>>()
    );
    let list: Vec<String> =
        serde_json::from_str(&b.send("GET", "/show/list", None).await.body).unwrap();
    let mut sorted = list.clone();
    sorted.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    expected.sort();
    assert_eq!(sorted, expected, "no update lost");

    // At the store: an expectation that no longer holds refuses the whole change.
    let k = key();
    store
        .create(&k, &record(T0, 60_000, 600_000))
        .await
        .unwrap();
    let mut first = set(&[("a", "1")]);
    first.expect.insert("a".into(), None);
    assert!(matches!(
        store.apply(&k, &first, T0 + 1).await,
        Ok(Applied::Done { .. })
    ));
    let mut stale = set(&[("a", "2"), ("b", "2")]);
    stale.expect.insert("a".into(), None);
    assert!(matches!(
        store.apply(&k, &stale, T0 + 2).await,
        Err(StoreError::Conflict(f)) if f == "a"
    ));
    let fields = load(&store, &k, T0 + 3).await.unwrap().record.fields;
    assert_eq!(fields.get("a").map(String::as_str), Some("1"));
    assert!(
        !fields.contains_key("b"),
        "nothing of the refused change was written"
    );
}

/// Concurrent read-modify-write requests on different keys all survive.
pub async fn concurrent_writes_to_different_keys_survive(store: DynStore) {
    let mut b = browser(store);
    b.send("POST", "/put/seed", Some(serde_json::json!(0)))
        .await;
    let replies = concurrently(50, |i| {
        let b = b.clone();
        async move {
            b.send_raw(
                "POST",
                &format!("/put/k{i}"),
                Some(serde_json::json!(i)),
                b.cookie.clone(),
            )
            .await
        }
    })
    .await;
    assert!(replies.iter().all(|r| r.status == 200));
    for i in 0..50 {
        assert_eq!(
            b.send("GET", &format!("/show/k{i}"), None).await.body,
            i.to_string()
        );
    }
}

async fn race_with_logout(store: DynStore, slow_path: &str) {
    let gate = Arc::new(Gate::default());
    let mut b = Browser::new(test_router(layer(store.clone()), gate.clone()));
    b.send("POST", "/login/alice", None).await;
    let key = SessionKey::parse(&b.send("GET", "/key", None).await.body).unwrap();
    let slow = {
        let b = b.clone();
        let path = slow_path.to_owned();
        tokio::spawn(async move { b.send_raw("POST", &path, None, b.cookie.clone()).await })
    };
    tokio::time::timeout(Duration::from_secs(10), gate.loaded.notified())
        .await
        .expect("slow request started");
    assert_eq!(b.clone().send("POST", "/logout", None).await.status, 200);
    gate.proceed.notify_one();
    let slow = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("bounded")
        .unwrap();
    assert!(
        load(&store, &key, crate::now_millis()).await.is_none(),
        "no resurrection"
    );
    let alices = listed(&store, "alice", crate::now_millis()).await;
    assert!(alices.is_none_or(|list| list.is_empty()));
    assert!(
        !slow
            .set_cookies
            .iter()
            .any(|c| c.contains(&b.cookie.clone().unwrap_or_default())),
        "the old cookie is not handed out again"
    );
    // The replayed cookie names no session.
    assert_eq!(b.send("GET", "/show/login", None).await.body, "null");
}

/// A request that loaded the session, then writes after a concurrent logout, writes nothing.
pub async fn write_racing_destroy_leaves_no_record(store: DynStore) {
    race_with_logout(store.clone(), "/slow-put/late").await;
    // And directly at the contract:
    let k = key();
    store.create(&k, &record(T0, 1000, 5000)).await.unwrap();
    store.destroy(&k).await.unwrap();
    assert_eq!(
        store.apply(&k, &set(&[("a", "1")]), T0 + 1).await.unwrap(),
        Applied::Gone
    );
    assert!(load(&store, &k, T0 + 1).await.is_none());
}

/// An increment (a blind write) after a concurrent logout does not revive the session.
pub async fn blind_write_after_destroy_leaves_no_record(store: DynStore) {
    race_with_logout(store, "/slow-incr/late").await;
}

/// A session unused for the idle timeout is gone, for reads and for writes.
pub async fn idle_expiry(store: DynStore) {
    let k = key();
    store.create(&k, &record(T0, 1000, 5000)).await.unwrap();
    assert!(load(&store, &k, T0 + 999).await.is_some());
    assert!(load(&store, &k, T0 + 1000).await.is_none());
    assert_eq!(
        store
            .apply(&k, &set(&[("a", "1")]), T0 + 1001)
            .await
            .unwrap(),
        Applied::Gone
    );
}

/// However often a session is refreshed, it ends at its absolute deadline.
pub async fn absolute_expiry(store: DynStore) {
    let k = key();
    store.create(&k, &record(T0, 1000, 2500)).await.unwrap();
    for step in 1..=4u64 {
        let now = T0 + step * 600;
        let refresh = Refresh {
            anonymous: None,
            if_deadline_before: now + 1000,
            new_deadline: now + 1000,
            now,
        };
        let alive = store.load(&k, now, Some(refresh)).await.unwrap();
        assert_eq!(alive.is_some(), now < T0 + 2500, "at +{}ms", step * 600);
    }
}

/// A session given its own expiry ("remember me", [`crate::Expiry`]): a write moves its
/// absolute deadline (out or in), and loads slide it by its own idle timeout, kept in
/// [`crate::EXPIRY_FIELD`], not by the window the layer passes for everyone else.
pub async fn a_session_keeps_its_own_expiry(store: DynStore) {
    let configured = |now: Millis| Refresh {
        anonymous: None,
        if_deadline_before: now + 900,
        new_deadline: now + 1000,
        now,
    };
    let k = key();
    store.create(&k, &record(T0, 1000, 2000)).await.unwrap();
    let mut remember = set(&[(crate::EXPIRY_FIELD, "[5000,500,true]")]);
    remember.absolute_deadline = Some(T0 + 10_000);
    remember.idle_deadline = Some(T0 + 100 + 5000);
    assert!(matches!(
        store.apply(&k, &remember, T0 + 100).await.unwrap(),
        Applied::Done { .. }
    ));
    // Past the old absolute deadline, alive; its own window makes the refresh due.
    let l = store
        .load(&k, T0 + 2500, Some(configured(T0 + 2500)))
        .await
        .unwrap()
        .expect("alive past the old absolute deadline");
    assert_eq!(l.record.absolute_deadline, T0 + 10_000);
    assert!(l.refreshed, "due by its own 5 s timeout");
    assert_eq!(l.record.idle_deadline, T0 + 7500);
    // Not due again until its own interval has passed.
    let l = store
        .load(&k, T0 + 2800, Some(configured(T0 + 2800)))
        .await
        .unwrap()
        .unwrap();
    assert!(!l.refreshed);
    assert!(load(&store, &k, T0 + 7400).await.is_some());
    assert!(
        load(&store, &k, T0 + 7600).await.is_none(),
        "its own idle timeout"
    );

    // A lifetime moved in ends the session at once when it lies in the past.
    let k = key();
    store.create(&k, &record(T0, 1000, 2000)).await.unwrap();
    let shorten = Changes {
        absolute_deadline: Some(T0 + 200),
        ..Changes::default()
    };
    store.apply(&k, &shorten, T0 + 100).await.unwrap();
    let l = load(&store, &k, T0 + 150).await.expect("alive until then");
    let deadlines = (l.record.idle_deadline, l.record.absolute_deadline);
    assert_eq!(deadlines, (T0 + 200, T0 + 200));
    assert!(load(&store, &k, T0 + 200).await.is_none());
}

/// The sliding refresh writes only when due, and moves the idle deadline when it does.
pub async fn refresh_is_throttled(store: DynStore) {
    let k = key();
    store.create(&k, &record(T0, 1000, 10_000)).await.unwrap();
    let not_due = Refresh {
        anonymous: None,
        if_deadline_before: T0 + 900,
        new_deadline: T0 + 1100,
        now: T0 + 100,
    };
    let l = store
        .load(&k, T0 + 100, Some(not_due))
        .await
        .unwrap()
        .unwrap();
    assert!(!l.refreshed);
    assert_eq!(l.record.idle_deadline, T0 + 1000);
    let due = Refresh {
        anonymous: None,
        if_deadline_before: T0 + 1500,
        new_deadline: T0 + 1600,
        now: T0 + 600,
    };
    let l = store.load(&k, T0 + 600, Some(due)).await.unwrap().unwrap();
    assert!(l.refreshed);
    assert_eq!(l.record.idle_deadline, T0 + 1600);
    assert!(
        load(&store, &k, T0 + 1500).await.is_some(),
        "the refresh was stored"
    );
}

/// A renewal's `cycle` moves the data to the new key; until the grace window ends the old key
/// can read it, but never write it or cycle it (an old ID must not act as the session).
pub async fn renewal_alias_is_read_only_for_the_grace_window(store: DynStore) {
    let old = key();
    let new = near(&store, &old);
    let mut r = record(T0, 10_000, 50_000);
    r.fields.insert("cart".into(), "3".into());
    store.create(&old, &r).await.unwrap();
    let changes = Changes {
        user: Some(UserChange::Set("alice".into())),
        ..set(&[("login", "true")])
    };
    let done = store
        .cycle(&old, &new, &changes, T0 + 10, T0 + 1000)
        .await
        .unwrap();
    assert!(matches!(done, Applied::Done { key, .. } if key == new));
    let fresh = load(&store, &new, T0 + 20).await.unwrap();
    assert_eq!(fresh.record.fields["cart"], "3");
    assert_eq!(fresh.record.fields["login"], "true");
    assert_eq!(fresh.record.user.as_deref(), Some("alice"));
    // Within the grace window the old key reads the same session, and writes nothing.
    let via_old = load(&store, &old, T0 + 500).await.unwrap();
    assert_eq!(via_old.key, new);
    let mut incr = Changes::default();
    incr.increments.insert("cart".into(), 1);
    assert_eq!(
        store.apply(&old, &incr, T0 + 600).await.unwrap(),
        Applied::Aliased
    );
    assert_eq!(
        store
            .cycle(&old, &near(&store, &old), &incr, T0 + 600, T0 + 900)
            .await
            .unwrap(),
        Applied::Aliased,
        "an old ID cannot walk away with a fresh one"
    );
    let Applied::Done { counters, .. } = store.apply(&new, &incr, T0 + 600).await.unwrap() else {
        panic!("the new key writes");
    };
    assert_eq!(counters["cart"], 4);
    // After it, the old key is rejected; the new one lives on.
    assert!(load(&store, &old, T0 + 1000).await.is_none());
    assert_eq!(
        store.apply(&old, &incr, T0 + 1001).await.unwrap(),
        Applied::Gone
    );
    assert_eq!(
        load(&store, &new, T0 + 1001).await.unwrap().record.fields["cart"],
        "4"
    );
    let alices = listed(&store, "alice", T0 + 1001).await;
    assert!(alices.is_none_or(|list| list.len() == 1));
    // Cycling onto a taken key is a collision; cycling a dead key is Gone.
    assert!(matches!(
        store
            .cycle(&new, &new, &Changes::default(), T0 + 1002, T0 + 2000)
            .await,
        Err(StoreError::IdCollision)
    ));
    let nobody = key();
    assert_eq!(
        store
            .cycle(
                &nobody,
                &near(&store, &nobody),
                &Changes::default(),
                T0,
                T0 + 10
            )
            .await
            .unwrap(),
        Applied::Gone
    );
}

/// A cycle that changes privilege (`grace_until <= now`) leaves no alias: the old key reaches
/// nothing at once, for reads, writes and cycles.
pub async fn privilege_cycle_leaves_no_old_id(store: DynStore) {
    let old = key();
    let new = near(&store, &old);
    store
        .create(&old, &record(T0, 10_000, 50_000))
        .await
        .unwrap();
    let login = Changes {
        user: Some(UserChange::Set("mallory-victim".into())),
        ..Changes::default()
    };
    let done = store.cycle(&old, &new, &login, T0 + 10, T0 + 10).await;
    assert!(matches!(done, Ok(Applied::Done { key, .. }) if key == new));
    assert!(load(&store, &old, T0 + 11).await.is_none());
    assert_eq!(
        store
            .apply(&old, &set(&[("x", "1")]), T0 + 11)
            .await
            .unwrap(),
        Applied::Gone
    );
    assert_eq!(
        store
            .cycle(
                &old,
                &near(&store, &old),
                &Changes::default(),
                T0 + 11,
                T0 + 11
            )
            .await
            .unwrap(),
        Applied::Gone
    );
    assert_eq!(load(&store, &new, T0 + 11).await.unwrap().key, new);
}

/// Login through the layer issues a new cookie, and the pre-login cookie (planted by an
/// attacker, say) reaches nothing from that moment: session fixation is closed.
pub async fn cycle_through_layer(store: DynStore) {
    let mut b = browser(store);
    b.send("POST", "/put/cart", Some(serde_json::json!(["apple"])))
        .await;
    let before = b.cookie.clone().unwrap();
    let login = b.send("POST", "/login/alice", None).await;
    assert_eq!(login.status, 200);
    let after = b.cookie.clone().unwrap();
    assert_ne!(before, after, "login cycles the ID");
    assert_eq!(b.send("GET", "/show/cart", None).await.body, "[\"apple\"]");
    assert_eq!(b.send("GET", "/whoami", None).await.body, "\"alice\"");
    let old = b
        .send_raw("GET", "/whoami", None, Some(before.clone()))
        .await;
    assert_eq!(old.body, "null", "the pre-login cookie reaches nothing");
    let stolen = b.send_raw("POST", "/cycle", None, Some(before)).await;
    assert!(
        !stolen.set_cookies.iter().any(|c| !c.contains("Max-Age=0")),
        "and cannot be cycled into a fresh cookie"
    );
    assert_eq!(b.send("GET", "/whoami", None).await.body, "\"alice\"");
}

/// Periodic renewal rotates the ID with a grace window: the old cookie still reads, never
/// writes (409), never cycles, and is never handed a cookie.
pub async fn renewal_through_layer(store: DynStore) {
    let config = test_config()
        .with_renewal(Duration::from_millis(200))
        .with_grace(Duration::from_secs(30))
        .build()
        .expect("valid config");
    let mut b = Browser::new(test_router(
        SessionLayer::from_arc(store, config),
        Arc::default(),
    ));
    assert_eq!(b.send("POST", "/login/alice", None).await.status, 200);
    b.send("POST", "/put/cart", Some(serde_json::json!(1)))
        .await;
    let before = b.cookie.clone().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let renewed = b.send("GET", "/show/cart", None).await;
    assert_eq!(renewed.body, "1");
    let after = b.cookie.clone().unwrap();
    assert_ne!(before, after, "the ID was renewed");
    let old_read = b
        .send_raw("GET", "/show/cart", None, Some(before.clone()))
        .await;
    assert_eq!(
        old_read.body, "1",
        "the old ID reads within the grace window"
    );
    assert!(old_read.set_cookies.is_empty());
    for (method, path, body) in [
        ("POST", "/put/cart", Some(serde_json::json!(2))),
        ("POST", "/incr/n", None),
        ("POST", "/cycle", None),
        ("POST", "/login/mallory", None),
    ] {
        let r = b.send_raw(method, path, body, Some(before.clone())).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{path} through the old ID");
        assert!(
            r.set_cookies.is_empty(),
            "{path} hands the old ID no cookie"
        );
    }
    assert_eq!(b.send("GET", "/show/cart", None).await.body, "1");
    assert_eq!(b.send("GET", "/show/n", None).await.body, "null");
    assert_eq!(b.send("GET", "/whoami", None).await.body, "\"alice\"");
}

/// Revoking a user's sessions also ends every old ID that still reached them.
pub async fn revoke_also_ends_aliases(store: DynStore) {
    if !has_user_index(&store).await {
        return;
    }
    let (old, mine) = (key(), key());
    let new = near(&store, &old);
    let alice = Changes {
        user: Some(UserChange::Set("alice".into())),
        ..Changes::default()
    };
    let now = crate::now_millis();
    for k in [&old, &mine] {
        store
            .create(k, &record(now, 60_000, 600_000))
            .await
            .unwrap();
        store.apply(k, &alice, now).await.unwrap();
    }
    store
        .cycle(&old, &new, &Changes::default(), now, now + 60_000)
        .await
        .unwrap();
    assert!(load(&store, &old, now + 1).await.is_some(), "alias works");
    assert_eq!(
        store
            .destroy_user("alice", Some(&mine), now + 1)
            .await
            .unwrap(),
        1
    );
    assert!(load(&store, &new, now + 2).await.is_none());
    assert!(
        load(&store, &old, now + 2).await.is_none(),
        "the alias is gone too"
    );
    assert!(load(&store, &mine, now + 2).await.is_some());
}

/// Insert, flash, increment (blind, in the store) and set_user all honour the byte and
/// field limits, before anything is written: `413`, and the session is as it was.
pub async fn every_write_path_honours_the_limits(store: DynStore) {
    let config = test_config()
        .with_max_fields(4)
        .with_max_size(1024)
        .build()
        .expect("valid config");
    let mut b = Browser::new(test_router(
        SessionLayer::from_arc(store.clone(), config),
        Arc::default(),
    ));
    for k in ["a", "b", "c"] {
        assert_eq!(
            b.send("POST", &format!("/incr/{k}"), None).await.status,
            200
        );
    }
    let over = [
        ("POST", "/put/d2", Some(serde_json::json!(1))),
        ("POST", "/flash/hello", None),
        (
            "POST",
            "/put/big",
            Some(serde_json::json!("x".repeat(2000))),
        ),
    ];
    assert_eq!(b.send("POST", "/incr/d", None).await.status, 200);
    for (method, path, body) in over {
        let r = b.send(method, path, body).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
    }
    // A blind increment of a new field: the layer has not loaded the session, so the store
    // checks, and writes nothing.
    let r = b.send("POST", "/incr/e", None).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "blind increment");
    assert_eq!(b.send("GET", "/show/e", None).await.body, "null");
    assert_eq!(
        b.send("POST", "/incr/a", None).await.body,
        "2",
        "existing fields still count"
    );
    let long_user = "u".repeat(2000);
    let r = b.send("POST", &format!("/login/{long_user}"), None).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "set_user");
    assert_eq!(b.send("GET", "/whoami", None).await.body, "null");
    // The contract directly: a change over the limits writes nothing.
    let k = key();
    store.create(&k, &record(T0, 1000, 5000)).await.unwrap();
    let mut many = set(&[("1", "1"), ("2", "2"), ("3", "3")]);
    many.limits = Some(crate::Limits {
        max_bytes: 100,
        max_fields: 2,
    });
    assert!(matches!(
        store.apply(&k, &many, T0 + 1).await,
        Err(StoreError::LimitExceeded(crate::Limit::Fields))
    ));
    assert!(load(&store, &k, T0 + 2)
        .await
        .unwrap()
        .record
        .fields
        .is_empty());
    // Values count at their length, new fields and grown ones alike, checked or not.
    let limits = Some(crate::Limits {
        max_bytes: 100,
        max_fields: 8,
    });
    let mut small = set(&[("a", "1")]);
    small.limits = limits;
    store.apply(&k, &small, T0 + 3).await.unwrap();
    let long = "9".repeat(200);
    for (field, expect) in [("a", Some("1".to_owned())), ("b", None)] {
        let mut grow = set(&[(field, long.as_str())]);
        grow.limits = limits;
        assert!(
            matches!(
                store.apply(&k, &grow, T0 + 4).await,
                Err(StoreError::LimitExceeded(crate::Limit::Bytes))
            ),
            "{field} grown past the byte limit"
        );
        grow.expect.insert(field.to_owned(), expect);
        assert!(
            matches!(
                store.apply(&k, &grow, T0 + 4).await,
                Err(StoreError::LimitExceeded(crate::Limit::Bytes))
            ),
            "{field} grown past the byte limit by a compare-and-set"
        );
    }
    let after = load(&store, &k, T0 + 5).await.unwrap().record.fields;
    assert_eq!(after.len(), 1);
    assert_eq!(after["a"], "1");
    // A counter counts at its length too, in every store: one that gains a digit past the
    // limit is refused, one that fits is not.
    let mut nines = set(&[("n", "99")]);
    nines.limits = limits;
    store.apply(&k, &nines, T0 + 6).await.unwrap();
    let size = load(&store, &k, T0 + 7).await.unwrap().record.data_size();
    let step = |by: i64| {
        let mut c = Changes::default();
        c.increments.insert("n".into(), by);
        c.limits = Some(crate::Limits {
            max_bytes: size,
            max_fields: 8,
        });
        c
    };
    assert!(matches!(
        store.apply(&k, &step(1), T0 + 8).await,
        Err(StoreError::LimitExceeded(crate::Limit::Bytes))
    ));
    assert!(store.apply(&k, &step(-1), T0 + 9).await.is_ok());
    // Through the layer: a list that grows with `update` stops at the limit.
    let mut grows = 0;
    let mut status = StatusCode::OK;
    while status == StatusCode::OK && grows < 100 {
        grows += 1;
        status = b
            .send("POST", &format!("/append/list/{}", "y".repeat(60)), None)
            .await
            .status;
    }
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "after {grows} appends"
    );
}

/// A session without a user gets the anonymous idle timeout; logging in gives it the full one.
pub async fn anonymous_sessions_expire_sooner(store: DynStore) {
    let config = test_config()
        .with_idle_timeout(Duration::from_secs(3600))
        .with_anonymous_idle_timeout(Some(Duration::from_secs(60)))
        .build()
        .expect("valid config");
    let layer = SessionLayer::from_arc(store.clone(), config.clone());
    let mut b = Browser::new(test_router(layer, Arc::default()));
    b.send("POST", "/put/x", Some(serde_json::json!(1))).await;
    let key_of = |b: &Browser| {
        let value = b
            .cookie
            .as_deref()
            .and_then(|c| c.split_once('='))
            .unwrap()
            .1;
        match config.keys.verify(value) {
            Some(crate::Verified::Current(id)) => id.key(),
            other => panic!("own cookie verifies: {other:?}"),
        }
    };
    let now = crate::now_millis();
    let anon = load(&store, &key_of(&b), now).await.unwrap().record;
    assert!(anon.idle_deadline <= now + 60_000, "anonymous: one minute");
    b.send("POST", "/login/alice", None).await;
    let signed_in = load(&store, &key_of(&b), now).await.unwrap().record;
    assert!(
        signed_in.idle_deadline > now + 3_000_000,
        "signed in: the full hour"
    );
}

/// A login request dropped after any number of polls (a client hanging up) leaves the session
/// whole: either still under its old ID and not yet the user's, or under a new ID that is in
/// the user's index; never lost, never duplicated.
pub async fn cancelled_login_leaves_one_whole_session(store: DynStore) {
    use std::future::Future as _;
    for polls in 0..12 {
        let mut b = browser(store.clone());
        b.send("POST", "/put/cart", Some(serde_json::json!(1)))
            .await;
        let cookie = b.cookie.clone().unwrap();
        let user = format!("cancel-{polls}-{}", crate::now_millis());
        let request = Request::builder()
            .method("POST")
            .uri(format!("/login/{user}"))
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .expect("valid request");
        let mut call = Box::pin(b.request(request));
        let mut seen = 0;
        std::future::poll_fn(|cx| {
            while seen < polls {
                seen += 1;
                if call.as_mut().poll(cx).is_ready() {
                    break;
                }
            }
            std::task::Poll::Ready(())
        })
        .await;
        drop(call);
        // Let a store call that was already sent finish on the server.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = b.send_raw("GET", "/whoami", None, Some(cookie)).await;
        let listed = listed(&store, &user, crate::now_millis()).await;
        let not_indexed = listed.as_ref().is_none_or(Vec::is_empty);
        match before.body.as_str() {
            "null" if before.status == StatusCode::OK && not_indexed => {
                // Not logged in: the old session must still be there, whole.
                let again = b.send("GET", "/show/cart", None).await;
                assert!(
                    again.body == "1" || again.body == "null",
                    "polls {polls}: {again:?}"
                );
            }
            _ => {
                // Without an index the pre-login ID is all there is to look through, and
                // it must reach either the old session or nothing.
                let listed = listed.unwrap_or_else(|| {
                    panic!("polls {polls}: the pre-login ID answered {before:?}")
                });
                assert_eq!(
                    listed.len(),
                    1,
                    "polls {polls}: the new session is indexed once"
                );
                assert_eq!(
                    listed[0].record.fields["cart"], "1",
                    "polls {polls}: with its data"
                );
            }
        }
    }
}

/// Sessions tagged with a user can be listed and revoked, all but one.
pub async fn per_user_list_and_revoke(store: DynStore) {
    if !has_user_index(&store).await {
        // The features built on it answer 501, not a wrong answer.
        let mut b = browser(store);
        assert_eq!(b.send("POST", "/login/alice", None).await.status, 200);
        assert_eq!(b.send("GET", "/mine", None).await.status, 501);
        assert_eq!(b.send("POST", "/others", None).await.status, 501);
        return;
    }
    let mut alice: Vec<Browser> = Vec::new();
    let base = browser(store.clone());
    for _ in 0..3 {
        let mut b = base.clone();
        b.cookie = None;
        assert_eq!(b.send("POST", "/login/alice", None).await.status, 200);
        alice.push(b);
    }
    let mut bob = base.clone();
    bob.cookie = None;
    bob.send("POST", "/login/bob", None).await;
    let now = crate::now_millis();
    assert_eq!(store.list_user("alice", now).await.unwrap().len(), 3);
    let mine = alice[0].send("GET", "/mine", None).await;
    let list: Vec<serde_json::Value> = serde_json::from_str(&mine.body).unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    assert_eq!(alice[0].send("POST", "/others", None).await.body, "2");
    assert_eq!(store.list_user("alice", now).await.unwrap().len(), 1);
    assert_eq!(alice[1].send("GET", "/show/login", None).await.body, "null");
    assert_eq!(alice[0].send("GET", "/show/login", None).await.body, "true");
    assert_eq!(bob.send("GET", "/show/login", None).await.body, "true");
    // The contract directly, including a change of owner.
    let k = key();
    store.create(&k, &record(T0, 1000, 5000)).await.unwrap();
    let to = |u: &str| Changes {
        user: Some(UserChange::Set(u.into())),
        ..Changes::default()
    };
    store.apply(&k, &to("carol"), T0 + 1).await.unwrap();
    store.apply(&k, &to("dave"), T0 + 2).await.unwrap();
    assert!(store.list_user("carol", T0 + 3).await.unwrap().is_empty());
    let dave: Vec<UserSession> = store.list_user("dave", T0 + 3).await.unwrap();
    assert_eq!(dave.len(), 1);
    assert_eq!(dave[0].key, k);
    assert!(
        store.list_user("dave", T0 + 1000).await.unwrap().is_empty(),
        "expired ones are not listed"
    );
    let k2 = key();
    store.create(&k2, &record(T0, 1000, 5000)).await.unwrap();
    store.apply(&k2, &to("erin"), T0 + 1).await.unwrap();
    assert_eq!(store.destroy_user("erin", None, T0 + 3).await.unwrap(), 1);
    assert!(load(&store, &k2, T0 + 4).await.is_none());
}

/// "Log out my other devices" sent with the ID a renewal just replaced (a request that left
/// before the renewal's answer arrived) keeps the session that ID moved to: the caller is
/// never among the others.
pub async fn revoke_others_spares_the_callers_renewed_session(store: DynStore) {
    if !has_user_index(&store).await {
        return;
    }
    let (old, other) = (key(), key());
    let renewed = near(&store, &old);
    let login = Changes {
        user: Some(UserChange::Set("frank".into())),
        ..Changes::default()
    };
    for k in [&old, &other] {
        store.create(k, &record(T0, 1000, 5000)).await.unwrap();
        store.apply(k, &login, T0 + 1).await.unwrap();
    }
    store
        .cycle(&old, &renewed, &Changes::default(), T0 + 2, T0 + 500)
        .await
        .unwrap();
    assert_eq!(
        store
            .destroy_user("frank", Some(&old), T0 + 3)
            .await
            .unwrap(),
        1
    );
    assert!(
        load(&store, &renewed, T0 + 4).await.is_some(),
        "the caller's session lives"
    );
    assert!(load(&store, &other, T0 + 4).await.is_none());
}

/// A value that would exceed the size limit is refused, and nothing is written.
pub async fn size_limit_writes_nothing(store: DynStore) {
    let mut b = browser(store);
    b.send("POST", "/put/small", Some(serde_json::json!("x")))
        .await;
    let huge = "y".repeat(17 * 1024);
    let reply = b
        .send("POST", "/put/huge", Some(serde_json::json!(huge)))
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(b.send("GET", "/show/huge", None).await.body, "null");
    assert_eq!(b.send("GET", "/show/small", None).await.body, "\"x\"");
    let reply = b
        .send("POST", "/put/__flash.x", Some(serde_json::json!(1)))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "reserved keys are refused"
    );
}

/// `create` never overwrites an existing session.
pub async fn id_collision_on_create(store: DynStore) {
    let k = key();
    let mut r = record(T0, 1000, 5000);
    r.fields.insert("owner".into(), "1".into());
    store.create(&k, &r).await.unwrap();
    let other = record(T0, 1000, 5000);
    assert!(matches!(
        store.create(&k, &other).await,
        Err(StoreError::IdCollision)
    ));
    assert_eq!(
        load(&store, &k, T0 + 1).await.unwrap().record.fields["owner"],
        "1"
    );
}

/// Destroying twice is fine; destroying a renewal's alias ends only the alias, never the
/// session (an old ID may not log its session out); destroying the session ends its alias.
pub async fn destroy_is_idempotent_and_an_alias_ends_only_itself(store: DynStore) {
    use crate::Destroyed;
    let old = key();
    let new = near(&store, &old);
    store
        .create(&old, &record(T0, 10_000, 50_000))
        .await
        .unwrap();
    store
        .cycle(&old, &new, &Changes::default(), T0 + 1, T0 + 5000)
        .await
        .unwrap();
    assert_eq!(store.destroy(&old).await.unwrap(), Destroyed::Alias);
    assert!(
        load(&store, &new, T0 + 2).await.is_some(),
        "the session lives on"
    );
    assert!(
        load(&store, &old, T0 + 2).await.is_none(),
        "the old ID is dead"
    );
    assert_eq!(store.destroy(&old).await.unwrap(), Destroyed::Nothing);
    // A session takes its alias with it.
    let newer = near(&store, &new);
    store
        .cycle(&new, &newer, &Changes::default(), T0 + 3, T0 + 5000)
        .await
        .unwrap();
    assert_eq!(store.destroy(&newer).await.unwrap(), Destroyed::Session);
    assert!(
        load(&store, &new, T0 + 4).await.is_none(),
        "its alias went with it"
    );
    assert_eq!(store.destroy(&newer).await.unwrap(), Destroyed::Nothing);
    assert_eq!(store.destroy(&key()).await.unwrap(), Destroyed::Nothing);
}

/// A store wrapper: `before` runs ahead of every call (to count it, fail it, or stall it),
/// then the call goes to `inner`. Test doubles implement this instead of the whole contract.
#[async_trait]
pub trait Hook: Send + Sync + 'static {
    /// The wrapped store.
    fn inner(&self) -> &DynStore;
    /// Runs before each call; an error is returned instead of calling the store.
    async fn before(&self, op: &'static str) -> Result<(), StoreError>;
}

#[async_trait]
impl<H: Hook> SessionStore for H {
    async fn load(
        &self,
        k: &SessionKey,
        now: Millis,
        r: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        self.before("load").await?;
        self.inner().load(k, now, r).await
    }
    async fn create(&self, k: &SessionKey, r: &Record) -> Result<(), StoreError> {
        self.before("create").await?;
        self.inner().create(k, r).await
    }
    async fn apply(&self, k: &SessionKey, c: &Changes, now: Millis) -> Result<Applied, StoreError> {
        self.before("apply").await?;
        self.inner().apply(k, c, now).await
    }
    async fn cycle(
        &self,
        o: &SessionKey,
        n: &SessionKey,
        c: &Changes,
        now: Millis,
        g: Millis,
    ) -> Result<Applied, StoreError> {
        self.before("cycle").await?;
        self.inner().cycle(o, n, c, now, g).await
    }
    async fn destroy(&self, k: &SessionKey) -> Result<crate::Destroyed, StoreError> {
        self.before("destroy").await?;
        self.inner().destroy(k).await
    }
    async fn list_user(&self, u: &str, now: Millis) -> Result<Vec<UserSession>, StoreError> {
        self.before("list_user").await?;
        self.inner().list_user(u, now).await
    }
    async fn destroy_user(
        &self,
        u: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        self.before("destroy_user").await?;
        self.inner().destroy_user(u, keep, now).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.before("stats").await?;
        self.inner().stats().await
    }
    fn cached(&self, k: &SessionKey) -> Option<Record> {
        self.inner().cached(k)
    }
    fn can_cycle_to(&self, old: &SessionKey, new: &SessionKey) -> bool {
        self.inner().can_cycle_to(old, new)
    }
    fn ended_recently(&self, key: &SessionKey, issued: Millis) -> bool {
        self.inner().ended_recently(key, issued)
    }
}

/// Counts every call into a store.
pub struct CountingStore {
    inner: DynStore,
    calls: AtomicU64,
    log: std::sync::Mutex<Vec<&'static str>>,
}

impl CountingStore {
    /// Wraps `inner`.
    #[must_use]
    pub fn new(inner: DynStore) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
            log: std::sync::Mutex::default(),
        }
    }

    /// Calls since the last `take`, and their names; resets both.
    pub fn take(&self) -> (u64, Vec<&'static str>) {
        let log = std::mem::take(
            &mut *self
                .log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        (self.calls.swap(0, Ordering::SeqCst), log)
    }

    fn count(&self, name: &'static str) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name);
    }
}

#[async_trait]
impl Hook for CountingStore {
    fn inner(&self) -> &DynStore {
        &self.inner
    }
    async fn before(&self, op: &'static str) -> Result<(), StoreError> {
        self.count(op);
        Ok(())
    }
}

/// Untouched 0 calls; read-only 1; read-modify-write 2; new session 1; increment 1;
/// login (with cycle) 2; logout 1.
pub async fn round_trip_budget(store: DynStore) {
    let counting = Arc::new(CountingStore::new(store));
    let mut b = browser(counting.clone());
    let expect = |label: &str, max: u64, calls: (u64, Vec<&'static str>)| {
        assert!(
            calls.0 <= max,
            "{label}: {} store calls {:?}, budget {max}",
            calls.0,
            calls.1
        );
        calls.0
    };
    b.send("GET", "/untouched", None).await;
    assert_eq!(expect("untouched, no cookie", 0, counting.take()), 0);
    b.send("POST", "/put/a", Some(serde_json::json!(1))).await;
    expect("new session", 1, counting.take());
    b.send("GET", "/untouched", None).await;
    assert_eq!(expect("untouched, with cookie", 0, counting.take()), 0);
    b.send("GET", "/show/a", None).await;
    expect("read-only", 1, counting.take());
    b.send("POST", "/put/b", Some(serde_json::json!(2))).await;
    expect("read-modify-write", 2, counting.take());
    b.send("POST", "/incr/n", None).await;
    expect("increment", 1, counting.take());
    b.send("POST", "/login/alice", None).await;
    // The cycle, and the default per-user limit's listing (a store without the per-user
    // index answers that once; the layer stops asking).
    expect("login", 3, counting.take());
    b.send("POST", "/logout", None).await;
    expect("logout", 1, counting.take());
    let mut fresh = b.clone();
    fresh.cookie = None;
    fresh.send("GET", "/show/a", None).await;
    assert_eq!(expect("read with no cookie", 0, counting.take()), 0);
}

/// Flash messages are shown once, in order.
pub async fn flashes_are_shown_once(store: DynStore) {
    let mut b = browser(store);
    b.send("POST", "/flash/one", None).await;
    b.send("POST", "/flash/two", None).await;
    assert_eq!(
        b.send("GET", "/flashes", None).await.body,
        "[\"one\",\"two\"]"
    );
    assert_eq!(b.send("GET", "/flashes", None).await.body, "[]");
}

/// The live-session count follows creates and destroys.
pub async fn stats_count_live_sessions(store: DynStore) {
    let before = match store.stats().await {
        Ok(stats) => stats.sessions,
        Err(StoreError::Unsupported(_)) => {
            // Optional; then the store is taken to be up.
            store.ping().await.expect("ping");
            return;
        }
        Err(e) => panic!("stats: {e}"),
    };
    let keys: Vec<SessionKey> = (0..5).map(|_| key()).collect();
    let now = crate::now_millis();
    for k in &keys {
        store.create(k, &record(now, 60_000, 60_000)).await.unwrap();
    }
    assert_eq!(store.stats().await.unwrap().sessions, before + 5);
    store.destroy(&keys[0]).await.unwrap();
    assert_eq!(store.stats().await.unwrap().sessions, before + 4);
}

/// An increment of a non-integer field fails and leaves the whole change unapplied.
pub async fn bad_increment_changes_nothing(store: DynStore) {
    let k = key();
    let mut r = record(T0, 1000, 5000);
    r.fields.insert("name".into(), "\"bob\"".into());
    store.create(&k, &r).await.unwrap();
    let mut changes = set(&[("other", "1")]);
    changes.increments.insert("name".into(), 1);
    assert!(matches!(
        store.apply(&k, &changes, T0 + 1).await,
        Err(StoreError::NotAnInteger(_))
    ));
    let fields: BTreeMap<String, String> = load(&store, &k, T0 + 2).await.unwrap().record.fields;
    assert_eq!(fields, r.fields);
}

/// A store that can be switched to fail or to hang, for failure-policy tests.
pub struct FlakyStore {
    inner: DynStore,
    /// Fail every call with [`StoreError::Unavailable`].
    pub down: AtomicBool,
    /// Never answer (exercises the timeout).
    pub hang: AtomicBool,
}

impl FlakyStore {
    /// Wraps `inner`, healthy.
    #[must_use]
    pub fn new(inner: DynStore) -> Self {
        Self {
            inner,
            down: AtomicBool::new(false),
            hang: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl Hook for FlakyStore {
    fn inner(&self) -> &DynStore {
        &self.inner
    }
    async fn before(&self, _op: &'static str) -> Result<(), StoreError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "store is down (test)",
            )));
        }
        Ok(())
    }
}
