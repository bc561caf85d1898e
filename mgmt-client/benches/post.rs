//! CPU per `PostToConnection` and calls per second, 64 in flight, for three clients in the same
//! run against a local sink that answers 200 at once: a plain unsigned hyper POST (the floor), this
//! crate's signed client, and `aws-sdk-apigatewaymanagement` with retries off; over plain HTTP and
//! over TLS (rustls, a generated certificate, HTTP/1.1). The sink runs in a child process, so the
//! CPU measured (utime+stime from `/proc/self/stat`) is the clients' alone. Rounds are interleaved
//! and the median is reported, with each client's ratio to the plain POST.
//!
//! Run: `cargo bench -p mgmt-client --bench post` (`MGMT_BENCH_SECS`, default 3, per measurement;
//! `MGMT_BENCH_ROUNDS`, default 3).

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mgmt_client::client::tls_config;
use mgmt_client::{ClientOptions, CredentialsSource, MgmtClient, SigningCredentials, TlsRoots};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const IN_FLIGHT: usize = 64;
const BODY: &[u8] =
    br#"{"type":"chat_message","room":"general","username":"ada","message":"hello, world!!"}"#;

fn main() {
    if std::env::var_os("MGMT_BENCH_SINK").is_some() {
        sink();
        return;
    }
    let secs: u64 = env_or("MGMT_BENCH_SECS", 3);
    let rounds: usize = env_or("MGMT_BENCH_ROUNDS", 3);

    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_der = generated.cert.der().to_vec();
    let key_der = generated.signing_key.serialize_der();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("MGMT_BENCH_SINK", "1")
        .env("MGMT_BENCH_CERT", hex::encode(&cert_der))
        .env("MGMT_BENCH_KEY", hex::encode(&key_der))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Vec<u16> = line
        .split_whitespace()
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect();
    let (http_port, https_port) = (ports[0], ports[1]);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    signing_alone();
    runtime.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(cert_der.clone())).unwrap();
        let pem = generated.cert.pem();
        println!("PostToConnection, {}-byte body, {IN_FLIGHT} in flight, {secs} s per measurement, median of {rounds} interleaved rounds", BODY.len());
        println!("{:<6} {:<40} {:>10} {:>14} {:>8}", "", "client", "calls/s", "CPU µs/call", "ratio");
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
            let medians: Vec<(f64, f64)> = results.iter().map(|r| median(r)).collect();
            let plain_cpu = medians[0].1;
            for (kind, (rate, cpu)) in Kind::ALL.into_iter().zip(medians) {
                println!(
                    "{:<6} {:<40} {:>10.0} {:>14.1} {:>7.2}×",
                    transport,
                    kind.name(),
                    rate,
                    cpu,
                    cpu / plain_cpu
                );
            }
        }
    });
    drop(child.stdin.take());
    let _ = child.wait();
}

/// The signer by itself, one thread: what SigV4 with a cached key adds to each call.
fn signing_alone() {
    use mgmt_client::signer::{Signer, SigningRequest};
    let signer = Signer::new();
    let credentials = SigningCredentials::new("AKIDEXAMPLE", "secret", None).unwrap();
    let n = 200_000;
    let cpu_start = cpu_seconds();
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
        (cpu_seconds() - cpu_start) * 1e6 / n as f64
    );
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(values: &[(f64, f64)]) -> (f64, f64) {
    let mut rates: Vec<f64> = values.iter().map(|v| v.0).collect();
    let mut cpus: Vec<f64> = values.iter().map(|v| v.1).collect();
    rates.sort_by(f64::total_cmp);
    cpus.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], cpus[cpus.len() / 2])
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

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let mut stat = String::new();
    std::fs::File::open("/proc/self/stat")
        .unwrap()
        .read_to_string(&mut stat)
        .unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Runs `IN_FLIGHT` loops of calls for `duration`; returns (calls per second, CPU µs per call).
async fn measure(clients: &Clients, kind: Kind, duration: Duration) -> (f64, f64) {
    let calls = AtomicU64::new(0);
    let failures = AtomicU64::new(0);
    let start = Instant::now();
    let cpu_start = cpu_seconds();
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
    let cpu = cpu_seconds() - cpu_start;
    let calls = calls.load(Ordering::Relaxed);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "{} had failures",
        kind.name()
    );
    (calls as f64 / elapsed, cpu * 1e6 / calls as f64)
}

/// The child process: a sink answering 200 to everything, over HTTP and over TLS (HTTP/1.1).
fn sink() {
    let cert = hex::decode(std::env::var("MGMT_BENCH_CERT").unwrap()).unwrap();
    let key = hex::decode(std::env::var("MGMT_BENCH_KEY").unwrap()).unwrap();
    // Exit when the parent closes our stdin (or dies).
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!(
            "PORTS {} {}",
            plain.local_addr().unwrap().port(),
            tls.local_addr().unwrap().port()
        );
        tokio::spawn(async move {
            loop {
                let (stream, _) = plain.accept().await.unwrap();
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_one(TokioIo::new(stream)));
            }
        });
        loop {
            let (stream, _) = tls.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    serve_one(TokioIo::new(stream)).await;
                }
            });
        }
    });
}

async fn serve_one<I>(io: I)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
            let _ = request.into_body().collect().await;
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
        });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}
