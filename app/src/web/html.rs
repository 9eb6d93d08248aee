//! Server-rendered HTML: one layout, and escaping for everything that came from a user.

use axum::response::Html;

/// Escapes text for HTML element content and attribute values.
#[must_use]
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page frame around `body` (already HTML).
pub fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Cloakroom</title><link rel=stylesheet href=/static/style.css></head>\
         <body><header><a class=brand href=/>Cloakroom</a></header><main>{body}</main>\
         <footer>Server-side sessions, done right.</footer></body></html>",
        title = esc(title),
    ))
}

/// Flash messages as a list, or nothing.
#[must_use]
pub fn flashes(messages: &[String]) -> String {
    if messages.is_empty() {
        return String::new();
    }
    let items: String = messages
        .iter()
        .map(|m| format!("<li>{}</li>", esc(m)))
        .collect();
    format!("<ul class=flashes role=status>{items}</ul>")
}

/// A hidden CSRF field.
#[must_use]
pub fn csrf_field(token: &str) -> String {
    format!("<input type=hidden name=csrf value=\"{}\">", esc(token))
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
