//! The examples in `examples/`, driven end to end through the same routers they serve.

use cloakroom::testing::Browser;

#[allow(dead_code)]
#[path = "../examples/hello.rs"]
mod hello;

#[allow(dead_code)]
#[path = "../examples/login.rs"]
mod login;

#[allow(dead_code)]
#[path = "../examples/forms.rs"]
mod forms;

#[allow(dead_code)]
#[path = "../examples/custom_store.rs"]
mod custom_store;

#[allow(dead_code)]
#[path = "../examples/upgrade_value.rs"]
mod upgrade_value;

/// A session holding the old shape is read in the new one, and keeps it.
#[tokio::test]
async fn an_old_shape_is_upgraded_and_written_back() {
    let mut b = Browser::new(upgrade_value::app());
    assert_eq!(b.send("POST", "/old/milk", None).await.status, 200);
    for _ in 0..2 {
        let reply = b.send("GET", "/cart", None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body, r#"{"items":[["milk",1]]}"#);
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

fn token(html: &str) -> String {
    let at = html.find("name=csrf value=\"").expect("a CSRF field") + 17;
    html[at..].split('"').next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn hello_counts_visits() {
    let mut b = Browser::new(hello::app());
    assert_eq!(
        b.send("GET", "/", None).await.body,
        "you have been here 1 times"
    );
    assert_eq!(
        b.send("GET", "/", None).await.body,
        "you have been here 2 times"
    );
}

#[tokio::test]
async fn login_logs_in_and_out_with_flashes_and_csrf() {
    let mut b = Browser::new(login::app());
    let page = b.send("GET", "/", None).await.body;
    assert!(page.contains("<h1>Log in</h1>"));
    let forged = b
        .send_body("POST", "/login", FORM, "csrf=wrong&name=mallory")
        .await;
    assert_eq!(forged.status, 403);
    let reply = b
        .send_body(
            "POST",
            "/login",
            FORM,
            format!("csrf={}&name=ada", token(&page)),
        )
        .await;
    assert_eq!(reply.status, 303);
    let page = b.send("GET", "/", None).await.body;
    assert!(
        page.contains("Welcome, ada!") && page.contains("Hello, ada"),
        "{page}"
    );
    let reply = b
        .send_body("POST", "/logout", FORM, format!("csrf={}", token(&page)))
        .await;
    assert_eq!(reply.status, 303);
    let page = b.send("GET", "/", None).await.body;
    assert!(
        page.contains("You have been logged out.") && page.contains("Log in"),
        "{page}"
    );
    // A cross-site post is refused by CsrfLayer before any handler runs.
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/logout")
        .header("content-type", FORM)
        .header("sec-fetch-site", "cross-site")
        .body(axum::body::Body::from("csrf=x"))
        .unwrap();
    assert_eq!(b.request(request).await.status, 403);
}

#[tokio::test]
async fn forms_keep_state_across_steps() {
    let mut b = Browser::new(forms::app());
    let page = b.send("GET", "/", None).await.body;
    b.send_body(
        "POST",
        "/",
        FORM,
        format!("csrf={}&email=ada%40example.com", token(&page)),
    )
    .await;
    let back = b.send("GET", "/", None).await.body;
    assert!(
        back.contains("value=\"ada@example.com\""),
        "typed input kept: {back}"
    );
    let plan = b.send("GET", "/plan", None).await.body;
    b.send_body(
        "POST",
        "/plan",
        FORM,
        format!("csrf={}&plan=pro", token(&plan)),
    )
    .await;
    let done = b.send("GET", "/done", None).await.body;
    assert_eq!(done, "Signed up ada@example.com on the pro plan.");
    assert!(
        !b.send("GET", "/", None).await.body.contains("ada@"),
        "the draft is gone"
    );
}

#[tokio::test]
async fn a_custom_store_sees_every_call() {
    let (router, store) = custom_store::app();
    let mut b = Browser::new(router);
    b.send("GET", "/", None).await;
    let second = b.send("GET", "/", None).await.body;
    assert!(second.starts_with("visit 2;"), "{second}");
    drop(store);
}
