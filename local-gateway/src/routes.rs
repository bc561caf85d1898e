//! Routes and route selection: which integration URL each WebSocket event goes to.
//!
//! `$connect`, `$disconnect` and `$default` go to `{base}/connect`, `{base}/disconnect` and `{base}/default`
//! (the wiring django-aws-api-gateway-websockets creates), unless overridden. A client frame goes to a
//! custom route when it is a JSON object whose selection field (`$request.body.action` by default),
//! stringified as API Gateway does, equals that route's key; everything else (other JSON, non-JSON text,
//! binary frames) goes to `$default`.

use std::collections::HashMap;
use url::Url;

/// Where each event goes.
#[derive(Debug, Clone)]
pub struct RouteTable {
    connect: Url,
    disconnect: Url,
    default: Url,
    custom: HashMap<String, Url>,
    /// The selection expression's path below `$request.body`, e.g. `["action"]`.
    selection_path: Vec<String>,
}

/// Why the routes could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RouteTableError {
    #[error(
        "--integration-base {0:?}: use an http:// or https:// URL, e.g. http://127.0.0.1:8080/ws"
    )]
    Base(String),
    #[error("--route {0:?}: use ROUTE_KEY=http://host/path")]
    Entry(String),
    #[error("--route {0:?}: the route key is given twice")]
    Duplicate(String),
    #[error(
        "--route-selection-expression {0:?}: use $request.body.FIELD (a dotted path for nested fields)"
    )]
    Selection(String),
}

fn http_url(s: &str) -> Option<Url> {
    Url::parse(s)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

impl RouteTable {
    /// Builds the table from the integration base, `KEY=URL` entries and the selection expression.
    pub fn parse(
        base: &str,
        entries: &[String],
        selection_expression: &str,
    ) -> Result<Self, RouteTableError> {
        let base_trimmed = base.trim().trim_end_matches('/');
        let derived = |route: &str| {
            http_url(&format!("{base_trimmed}/{route}"))
                .ok_or_else(|| RouteTableError::Base(base.to_owned()))
        };
        let mut table = RouteTable {
            connect: derived("connect")?,
            disconnect: derived("disconnect")?,
            default: derived("default")?,
            custom: HashMap::new(),
            selection_path: Vec::new(),
        };
        let mut seen = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (key, url) = entry
                .split_once('=')
                .map(|(k, u)| (k.trim(), u.trim()))
                .filter(|(k, _)| !k.is_empty() && !k.contains(char::is_whitespace))
                .ok_or_else(|| RouteTableError::Entry(entry.to_owned()))?;
            let url = http_url(url).ok_or_else(|| RouteTableError::Entry(entry.to_owned()))?;
            if seen.contains(&key) {
                return Err(RouteTableError::Duplicate(key.to_owned()));
            }
            seen.push(key);
            match key {
                "$connect" => table.connect = url,
                "$disconnect" => table.disconnect = url,
                "$default" => table.default = url,
                _ => {
                    table.custom.insert(key.to_owned(), url);
                }
            }
        }
        let path = selection_expression
            .trim()
            .strip_prefix("$request.body.")
            .ok_or_else(|| RouteTableError::Selection(selection_expression.to_owned()))?;
        table.selection_path = path.split('.').map(str::to_owned).collect();
        if table.selection_path.iter().any(|s| s.is_empty()) {
            return Err(RouteTableError::Selection(selection_expression.to_owned()));
        }
        Ok(table)
    }

    pub fn connect(&self) -> &Url {
        &self.connect
    }

    pub fn disconnect(&self) -> &Url {
        &self.disconnect
    }

    /// The route for a client frame (`text` is false for binary frames).
    pub fn select(&self, frame: &[u8], text: bool) -> &Url {
        if self.custom.is_empty() || !text {
            return &self.default;
        }
        // Only a JSON object can carry the selection field; skip parsing anything else.
        if frame.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return &self.default;
        }
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(frame) else {
            return &self.default;
        };
        let mut value = &body;
        for segment in &self.selection_path {
            match value.get(segment) {
                Some(v) => value = v,
                None => return &self.default,
            }
        }
        // API Gateway stringifies the JSONPath result.
        let key = match value {
            serde_json::Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
            serde_json::Value::Number(n) => std::borrow::Cow::Owned(n.to_string()),
            serde_json::Value::Bool(b) => std::borrow::Cow::Owned(b.to_string()),
            _ => return &self.default,
        };
        self.custom.get(key.as_ref()).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[&str], expr: &str) -> RouteTable {
        let routes: Vec<String> = routes.iter().map(|s| s.to_string()).collect();
        RouteTable::parse("http://i:1/ws/", &routes, expr).unwrap()
    }

    fn check(t: &RouteTable, frame: &str, expected: &str) {
        assert_eq!(
            t.select(frame.as_bytes(), true).as_str(),
            expected,
            "{frame}"
        );
    }

    #[test]
    fn derived_urls_follow_the_django_wiring() {
        let t = table(&[], "$request.body.action");
        assert_eq!(t.connect().as_str(), "http://i:1/ws/connect");
        assert_eq!(t.disconnect().as_str(), "http://i:1/ws/disconnect");
        check(&t, r#"{"action":"sendmessage"}"#, "http://i:1/ws/default");
    }

    #[test]
    fn selection() {
        let t = table(
            &[
                "sendmessage=http://x/send",
                "7=http://x/seven",
                "$default=http://x/fallback",
            ],
            "$request.body.action",
        );
        check(&t, r#" {"action":"sendmessage","m":1}"#, "http://x/send");
        check(&t, r#"{"action":7}"#, "http://x/seven");
        check(&t, r#"{"action":"other"}"#, "http://x/fallback");
        check(&t, r#"{"handler":"sendmessage"}"#, "http://x/fallback");
        check(&t, r#"["sendmessage"]"#, "http://x/fallback");
        check(&t, "sendmessage", "http://x/fallback");
        check(&t, "{not json", "http://x/fallback");
        assert_eq!(
            t.select(br#"{"action":"sendmessage"}"#, false).as_str(),
            "http://x/fallback"
        );
        let nested = table(&["go=http://x/go"], "$request.body.meta.kind");
        check(&nested, r#"{"meta":{"kind":"go"}}"#, "http://x/go");
        check(&nested, r#"{"kind":"go"}"#, "http://i:1/ws/default");
    }

    #[test]
    fn refusals() {
        let parse = |routes: &[&str], expr: &str| {
            let routes: Vec<String> = routes.iter().map(|s| s.to_string()).collect();
            RouteTable::parse("http://i:1/ws", &routes, expr).map(|_| ())
        };
        assert!(parse(&["nourl"], "$request.body.action").is_err());
        assert!(parse(&["a=ftp://x"], "$request.body.action").is_err());
        assert!(parse(&["a=http://x", "a=http://y"], "$request.body.action").is_err());
        assert!(parse(&[], "$request.header.x").is_err());
        assert!(parse(&[], "$request.body.a..b").is_err());
        assert!(RouteTable::parse("not a url", &[], "$request.body.action").is_err());
    }
}
