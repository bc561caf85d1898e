//! What the benchmarks share, so that every crate's figures are measured the same way: CPU time from the
//! kernel's process CPU clocks (nanoseconds, not `/proc` ticks of 10 ms), peak memory, medians with their
//! spread, settings from the environment, and the "OK sink": a child process that answers 200 at once to
//! every POST over plain HTTP and over TLS (rustls, HTTP/1.1), so a client's CPU can be measured without
//! the server's.
//!
//! A bench that uses the sink calls [`OkSink::serve_if_child`] first thing in `main`: when the process was
//! started as the sink it serves until its parent closes its stdin and never returns.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::{BufRead, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// The CPU time (user + system, every thread) this process has used, from `CLOCK_PROCESS_CPUTIME_ID`.
pub fn cpu_time() -> Duration {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .expect("the process CPU clock");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// The CPU time another process has used so far, from its process CPU clock.
pub fn cpu_time_of(pid: u32) -> Duration {
    let clock = nix::time::clock_getcpuclockid(nix::unistd::Pid::from_raw(pid as i32))
        .expect("a CPU clock for the process");
    let t = nix::time::clock_gettime(clock).expect("the process CPU clock");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// The peak resident set size of this process since the last [`reset_peak_rss`], in MiB (VmHWM).
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Resets VmHWM to the current RSS (`echo 5 > /proc/self/clear_refs`, Linux 4.0+).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A setting from the environment, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of repeated measurements with their range, for "median (min–max)" reporting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Panics on an empty slice: a measurement that was never taken is a bug in the bench.
    pub fn of(values: &[f64]) -> Self {
        assert!(!values.is_empty(), "no measurements");
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Spread {
            median: sorted[sorted.len() / 2],
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = f.precision().unwrap_or(2);
        write!(f, "{:.p$} ({:.p$}–{:.p$})", self.median, self.min, self.max)
    }
}

const SINK_VAR: &str = "FANOUT_BENCH_OK_SINK";
const CERT_VAR: &str = "FANOUT_BENCH_OK_SINK_CERT";
const KEY_VAR: &str = "FANOUT_BENCH_OK_SINK_KEY";

/// The OK sink, running as a child of the bench: its ports and its certificate (self-signed for
/// `localhost`). Dropping it ends the child.
#[derive(Debug)]
pub struct OkSink {
    child: Child,
    pub http_port: u16,
    pub https_port: u16,
    /// The certificate, DER, for the clients' root store.
    pub cert_der: Vec<u8>,
    /// The same certificate, PEM.
    pub cert_pem: String,
}

impl OkSink {
    /// Starts the current executable as the sink (it must call [`OkSink::serve_if_child`] at the top of
    /// `main`) and waits for its ports.
    pub fn start() -> Self {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert_der = generated.cert.der().to_vec();
        let key_der = generated.signing_key.serialize_der();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(SINK_VAR, "1")
            .env(CERT_VAR, hex(&cert_der))
            .env(KEY_VAR, hex(&key_der))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the sink process");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ports: Vec<u16> = line
            .split_whitespace()
            .skip(1)
            .map(|p| p.parse().expect("the sink prints PORTS http https"))
            .collect();
        OkSink {
            child,
            http_port: ports[0],
            https_port: ports[1],
            cert_der,
            cert_pem: generated.cert.pem(),
        }
    }

    /// In the sink process: serves until the parent closes stdin, then exits. Elsewhere: returns at once.
    pub fn serve_if_child() {
        if std::env::var_os(SINK_VAR).is_none() {
            return;
        }
        let cert = unhex(&std::env::var(CERT_VAR).unwrap());
        let key = unhex(&std::env::var(KEY_VAR).unwrap());
        std::thread::spawn(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            std::process::exit(0);
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(serve(cert, key));
        std::process::exit(0);
    }
}

impl Drop for OkSink {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

async fn serve(cert: Vec<u8>, key: Vec<u8>) {
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
            tokio::spawn(answer_ok(hyper_util::rt::TokioIo::new(stream)));
        }
    });
    loop {
        let (stream, _) = tls.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(stream) = acceptor.accept(stream).await {
                answer_ok(hyper_util::rt::TokioIo::new(stream)).await;
            }
        });
    }
}

/// Reads every request's body and answers 200 with an empty body, on bare hyper.
async fn answer_ok<I>(io: I)
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_and_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0, 4.0]);
        assert_eq!(
            s,
            Spread {
                median: 3.0,
                min: 1.0,
                max: 10.0
            }
        );
        assert_eq!(format!("{s:.1}"), "3.0 (1.0–10.0)");
    }

    #[test]
    fn cpu_time_counts_work_in_nanoseconds() {
        let before = cpu_time();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let spent = cpu_time() - before;
        assert!(
            spent > Duration::ZERO && spent < Duration::from_secs(5),
            "{spent:?}"
        );
        // Finer than a 10 ms tick: a short stretch of work is not rounded to 0 or 10 ms.
        assert_ne!(spent.subsec_nanos() % 1_000_000, 0, "{spent:?}");
        assert!(cpu_time_of(std::process::id()) >= before + spent);
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)), bytes);
    }

    #[test]
    fn settings_fall_back_to_their_default() {
        assert_eq!(env_or("FANOUT_BENCH_SURELY_UNSET", 7usize), 7);
        assert_eq!(env_or("PATH", 7usize), 7, "unparsable falls back");
    }
}
