//! Server-rendered HTML: one layout and its small parts, as `maud` templates. Everything
//! interpolated into a template is escaped unless marked otherwise (nothing here is), so
//! user input cannot become markup by a forgotten call.

use maud::{html, Markup, DOCTYPE};

/// The page frame around `body`.
pub fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Cloakroom" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header { a.brand href="/" { "Cloakroom" } }
                main { (body) }
                footer { "Server-side sessions, done right." }
            }
        }
    }
}

/// Flash messages as a list, or nothing.
pub fn flashes(messages: &[String]) -> Markup {
    html! {
        @if !messages.is_empty() {
            ul.flashes role="status" { @for m in messages { li { (m) } } }
        }
    }
}

/// A hidden CSRF field.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

#[cfg(test)]
mod tests {
    #[test]
    fn interpolated_text_is_escaped() {
        let markup = super::flashes(&["<a href='x'>&\"</a>".to_owned()]).into_string();
        assert_eq!(
            markup,
            "<ul class=\"flashes\" role=\"status\"><li>&lt;a href='x'&gt;&amp;&quot;&lt;/a&gt;</li></ul>"
        );
        let field = super::csrf_field("\"><script>").into_string();
        assert!(
            field.contains("value=\"&quot;&gt;&lt;script&gt;\""),
            "{field}"
        );
    }
}
