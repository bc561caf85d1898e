//! CPU per `PostToConnection` and calls per second, 64 in flight, for three clients in the same
//! run against a local sink that answers 200 at once: a plain unsigned hyper POST (the floor), this
//! crate's signed client, and `aws-sdk-apigatewaymanagement` with retries off; over plain HTTP and
//! over TLS (rustls, a generated certificate, HTTP/1.1). The sink runs in a child process
//! (`test_support::bench::OkSink`), so the CPU measured (the process CPU clock) is the clients' alone.
//! Rounds are interleaved; each round's CPU ratio to the plain POST is taken within the round, and the
//! median with its range over the rounds is reported.
//!
//! Run: `cargo bench -p mgmt-client --bench post` (`MGMT_BENCH_SECS`, default 3, per measurement;
//! `MGMT_BENCH_ROUNDS`, default 5).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use mgmt_client::client::tls_config;
use mgmt_client::{ClientOptions, CredentialsSource, MgmtClient, SigningCredentials, TlsRoots};
use rustls::pki_types::CertificateDer;
use test_support::bench::{OkSink, Spread, cpu_time, env_or};

const IN_FLIGHT: usize = 64;
const BODY: &[u8] =
    br#"{"type":"chat_message","room":"general","username":"ada","message":"hello, world!!"}"#;

fn main() {
    OkSink::serve_if_child();
    let secs: u64 = env_or("MGMT_BENCH_SECS", 3);
    let rounds: usize = env_or("MGMT_BENCH_ROUNDS", 5);
    let sink = OkSink::start();
    let (http_port, https_port) = (sink.http_port, sink.https_port);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    signing_alone();
    runtime.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(sink.cert_der.clone())).unwrap();
        let pem = sink.cert_pem.clone();
        println!("PostToConnection, {}-byte body, {IN_FLIGHT} in flight, {secs} s per measurement, {rounds} interleaved rounds: median (min–max)", BODY.len());
        println!("{:<6} {:<40} {:>10} {:>14} {:>22}", "", "client", "calls/s", "CPU µs/call", "CPU ratio to plain");
        for (transport, base) in [
            ("http", format!("http://localhost:{http_port}/prod")),
            ("https", format!("https://localhost:{https_port}/prod")),
        ] {
            let clients = Clients::new(&base, &roots, &pem);
            // Warm-up: connections open, keys derived, allocator settled.
            for kind in Kind::ALL {
                measure(&clients, kind, Duration::from_millis(500)).await;
            }
            let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); Kind::ALL.len()];
            for _ in 0..rounds {
                for (i, kind) in Kind::ALL.into_iter().enumerate() {
                    results[i].push(measure(&clients, kind, Duration::from_secs(secs)).await);
                }
            }
            // Each round's ratio compares two measurements taken moments apart; the spread shows the noise.
            for (i, kind) in Kind::ALL.into_iter().enumerate() {
                let rates: Vec<f64> = results[i].iter().map(|r| r.0).collect();
                let cpus: Vec<f64> = results[i].iter().map(|r| r.1).collect();
                let ratios: Vec<f64> = results[i]
                    .iter()
                    .zip(&results[0])
                    .map(|(r, plain)| r.1 / plain.1)
                    .collect();
                println!(
                    "{:<6} {:<40} {:>10.0} {:>14.1} {:>22.2}",
                    transport,
                    kind.name(),
                    Spread::of(&rates).median,
                    Spread::of(&cpus).median,
                    Spread::of(&ratios)
                );
            }
        }
    });
    drop(sink);
}

/// The signer by itself, one thread: what SigV4 with a cached key adds to each call.
fn signing_alone() {
    use mgmt_client::signer::{Signer, SigningRequest};
    let signer = Signer::new();
    let credentials = SigningCredentials::new("AKIDEXAMPLE", "secret", None).unwrap();
    let n = 200_000;
    let cpu_start = cpu_time();
    let start = Instant::now();
    for i in 0..n {
        let path = format!("/prod/@connections/conn-{i}%3D");
        let signed = signer.sign(
            &credentials,
            "us-east-1",
            &SigningRequest {
                method: "POST",
                host: "abc.execute-api.us-east-1.amazonaws.com",
                path: &path,
                content_type: Some("application/octet-stream"),
                body: BODY,
            },
            std::time::SystemTime::now(),
        );
        std::hint::black_box(signed);
    }
    println!(
        "Signer::sign alone: {:.2} µs wall, {:.2} µs CPU per request ({n} requests, one thread)",
        start.elapsed().as_secs_f64() * 1e6 / n as f64,
        (cpu_time() - cpu_start).as_secs_f64() * 1e6 / n as f64
    );
}

#[derive(Clone, Copy)]
enum Kind {
    Plain,
    Lean,
    Sdk,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Plain, Kind::Lean, Kind::Sdk];
    fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain unsigned hyper POST",
            Kind::Lean => "mgmt-client (SigV4, cached key)",
            Kind::Sdk => "aws-sdk-apigatewaymanagement (no retry)",
        }
    }
}

struct Clients {
    base: String,
    plain: Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    lean: MgmtClient,
    lean_endpoint: mgmt_client::Endpoint,
    sdk: aws_sdk_apigatewaymanagement::Client,
}

impl Clients {
    fn new(base: &str, roots: &rustls::RootCertStore, pem: &str) -> Self {
        let tls = tls_config(&TlsRoots::Custom(roots.clone())).unwrap();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let plain = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IN_FLIGHT)
            .pool_timer(TokioTimer::new())
            .build(connector);

        let credentials = SigningCredentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
        )
        .unwrap();
        let options = ClientOptions {
            tls_roots: TlsRoots::Custom(roots.clone()),
            ..ClientOptions::default()
        };
        let lean = MgmtClient::new(options, CredentialsSource::fixed(credentials)).unwrap();
        let lean_endpoint = lean.endpoint(base, "us-east-1").unwrap();

        use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(
                tls::TlsContext::builder()
                    .with_trust_store(tls::TrustStore::empty().with_pem_certificate(pem.as_bytes()))
                    .build()
                    .unwrap(),
            )
            .build_https();
        let config = aws_sdk_apigatewaymanagement::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                "AKIDEXAMPLE",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                None,
                None,
                "bench",
            ))
            .endpoint_url(base)
            .http_client(http_client)
            .retry_config(RetryConfig::disabled())
            .build();
        Clients {
            base: base.to_owned(),
            plain,
            lean,
            lean_endpoint,
            sdk: aws_sdk_apigatewaymanagement::Client::from_conf(config),
        }
    }

    async fn call(&self, kind: Kind, id: &str) -> bool {
        match kind {
            Kind::Plain => {
                let request = http::Request::post(format!("{}/@connections/{id}", self.base))
                    .header("content-type", "application/octet-stream")
                    .header("content-length", BODY.len())
                    .body(Full::new(Bytes::from_static(BODY)))
                    .unwrap();
                match self.plain.request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        response.into_body().collect().await.is_ok() && ok
                    }
                    Err(_) => false,
                }
            }
            Kind::Lean => self
                .lean
                .post_to_connection(&self.lean_endpoint, id, Bytes::from_static(BODY))
                .await
                .is_ok(),
            Kind::Sdk => self
                .sdk
                .post_to_connection()
                .connection_id(id)
                .data(Blob::new(BODY))
                .send()
                .await
                .is_ok(),
        }
    }
}

/// Runs `IN_FLIGHT` loops of calls for `duration`; returns (calls per second, CPU µs per call).
async fn measure(clients: &Clients, kind: Kind, duration: Duration) -> (f64, f64) {
    let calls = AtomicU64::new(0);
    let failures = AtomicU64::new(0);
    let start = Instant::now();
    let cpu_start = cpu_time();
    let deadline = start + duration;
    let loops = (0..IN_FLIGHT).map(|worker| {
        let (calls, failures) = (&calls, &failures);
        async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let id = format!("conn-{worker}-{n}=");
                if clients.call(kind, &id).await {
                    calls.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }
    });
    futures::future::join_all(loops).await;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu_start).as_secs_f64();
    let calls = calls.load(Ordering::Relaxed);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "{} had failures",
        kind.name()
    );
    (calls as f64 / elapsed, cpu * 1e6 / calls as f64)
}
