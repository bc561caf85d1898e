//! The API Gateway WebSocket APIs this deployment serves, and where their Management API lives.
//!
//! Ingest accepts callbacks only from these API ids (the `X-Amzn-Apigateway-Api-Id` header) and stores the
//! API id on each connection; the worker turns the API id back into the Management API endpoint. Each
//! entry is written as one of:
//!
//! - `API_ID/STAGE` : endpoint `https://API_ID.execute-api.REGION.amazonaws.com/STAGE`, with the default region;
//! - `API_ID/STAGE@REGION` : the same with an explicit region;
//! - `API_ID=URL` : an explicit endpoint (the local gateway emulator, or a VPC endpoint); the stage is the
//!   URL's last path segment.

use std::fmt;

/// The HTTP headers API Gateway's integration sends to ingest, as the deployment templates map them.
/// Header names are case-insensitive; these are the spellings the templates use.
pub mod headers {
    /// `integration.request.header.connectionId` mapped from `context.connectionId`.
    pub const CONNECTION_ID: &str = "connectionId";
    /// Added by API Gateway to every HTTP integration request.
    pub const API_ID: &str = "X-Amzn-Apigateway-Api-Id";
    /// A static value mapped by the integration; proves the callback came through our gateway.
    pub const GATEWAY_SECRET: &str = "X-Ws-Gateway-Secret";
    /// The client's address chain; the first entry is the browser's IP.
    pub const FORWARDED_FOR: &str = "X-Forwarded-For";
    /// The browser's Origin, forwarded on `$connect`.
    pub const ORIGIN: &str = "Origin";
    /// `integration.request.header.X-Ws-Source-Ip` mapped from `context.identity.sourceIp`: the client's
    /// address as API Gateway saw it, which the client cannot set (unlike `X-Forwarded-For`).
    pub const SOURCE_IP: &str = "X-Ws-Source-Ip";
}

/// One WebSocket API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayApi {
    pub api_id: String,
    pub stage: String,
    pub region: Option<String>,
    /// The Management API endpoint, without a trailing slash, e.g. `https://abc.execute-api.eu-west-1.amazonaws.com/production`.
    pub endpoint: String,
}

/// Why a gateway entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid API Gateway entry {entry:?}: {why} (expected API_ID/STAGE, API_ID/STAGE@REGION or API_ID=https://endpoint/STAGE)"
)]
pub struct GatewayParseError {
    pub entry: String,
    pub why: &'static str,
}

/// Every configured API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gateways(Vec<GatewayApi>);

impl Gateways {
    /// Parses entries; `default_region` fills entries that name none.
    pub fn parse(entries: &[String], default_region: &str) -> Result<Self, GatewayParseError> {
        let mut apis: Vec<GatewayApi> = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let api = parse_entry(entry, default_region)?;
            if apis.iter().any(|a| a.api_id == api.api_id) {
                return Err(GatewayParseError {
                    entry: entry.to_owned(),
                    why: "the API id is listed twice",
                });
            }
            apis.push(api);
        }
        Ok(Self(apis))
    }

    pub fn get(&self, api_id: &str) -> Option<&GatewayApi> {
        self.0.iter().find(|a| a.api_id == api_id)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &GatewayApi> {
        self.0.iter()
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_entry(entry: &str, default_region: &str) -> Result<GatewayApi, GatewayParseError> {
    let err = |why| GatewayParseError {
        entry: entry.to_owned(),
        why,
    };
    if let Some((api_id, endpoint)) = entry.split_once('=') {
        if !valid_id(api_id) {
            return Err(err("the API id must be letters, digits, - or _"));
        }
        let url = url::Url::parse(endpoint).map_err(|_| err("the endpoint is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("the endpoint must be http or https"));
        }
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let stage = url
            .path_segments()
            .and_then(|mut s| s.rfind(|x| !x.is_empty()).map(str::to_owned))
            .ok_or_else(|| {
                err("the endpoint URL must end with the stage, e.g. http://127.0.0.1:4000/local")
            })?;
        return Ok(GatewayApi {
            api_id: api_id.to_owned(),
            stage,
            region: None,
            endpoint,
        });
    }
    let (api_id, rest) = entry.split_once('/').ok_or_else(|| err("missing /STAGE"))?;
    let (stage, region) = match rest.split_once('@') {
        Some((stage, region)) => (stage, region),
        None => (rest, default_region),
    };
    if !valid_id(api_id) || !valid_id(stage) {
        return Err(err("the API id and stage must be letters, digits, - or _"));
    }
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(err("the region must look like eu-west-1"));
    }
    Ok(GatewayApi {
        api_id: api_id.to_owned(),
        stage: stage.to_owned(),
        region: Some(region.to_owned()),
        endpoint: format!("https://{api_id}.execute-api.{region}.amazonaws.com/{stage}"),
    })
}

impl fmt::Display for GatewayApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.api_id, self.endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entries: &[&str]) -> Result<Gateways, GatewayParseError> {
        Gateways::parse(
            &entries.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "us-east-1",
        )
    }

    #[test]
    fn entry_forms() {
        let g = parse(&[
            "abc123/production",
            "def456/prod@eu-west-1",
            "local=http://127.0.0.1:4000/local/",
        ])
        .unwrap();
        assert_eq!(
            g.get("abc123").unwrap().endpoint,
            "https://abc123.execute-api.us-east-1.amazonaws.com/production"
        );
        assert_eq!(
            g.get("def456").unwrap().endpoint,
            "https://def456.execute-api.eu-west-1.amazonaws.com/prod"
        );
        let local = g.get("local").unwrap();
        assert_eq!(
            (local.stage.as_str(), local.endpoint.as_str()),
            ("local", "http://127.0.0.1:4000/local")
        );
        assert!(g.get("nope").is_none());
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        assert!(
            parse(&["abc"])
                .unwrap_err()
                .to_string()
                .contains("missing /STAGE")
        );
        assert!(parse(&["a/b", "a/c"]).unwrap_err().why.contains("twice"));
        assert!(parse(&["x=ftp://h/s"]).is_err());
        assert!(parse(&["x=http://h/"]).is_err());
        assert!(parse(&["a b/prod"]).is_err());
        assert!(parse(&["a/prod@EU"]).is_err());
    }
}
