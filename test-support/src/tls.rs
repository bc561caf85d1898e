//! A `redis-server` that accepts only TLS (`--tls-port`, the plain port off), with a certificate for
//! `127.0.0.1` and `localhost` signed by a certificate authority generated for the test run (rcgen). A
//! client trusts it by reading [`RedisTlsServer::ca_file`], e.g. through `SSL_CERT_FILE`, which is how the
//! services find their roots in production (the images set it to the system bundle).

use crate::free_port;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A TLS-only `redis-server` child process on a free loopback port, stopped when dropped.
#[derive(Debug)]
pub struct RedisTlsServer {
    port: u16,
    dir: PathBuf,
    child: Child,
}

/// A certificate authority and a server certificate it signed, as PEM files in a directory.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Writes a fresh CA certificate to `ca_file`, and returns it signing a server certificate for the loopback
/// names, written next to it.
fn generate(dir: &Path, ca_name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "fanout test redis");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("redis.pem"),
        key: dir.join("redis.key"),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// Writes a certificate authority that signed nothing this server presents: a client that trusts only it
/// must refuse the server.
pub fn unrelated_ca_file(dir: &Path) -> PathBuf {
    let dir = dir.join("unrelated");
    std::fs::create_dir_all(&dir).unwrap();
    generate(&dir, "unrelated test CA").ca
}

impl RedisTlsServer {
    /// Generates the certificates, starts the server and waits until its TLS port accepts connections.
    /// Panics when `redis-server` lacks TLS support (Debian's build has it; `redis-server --version`
    /// shows the build, and a TLS-less build refuses `--tls-port`).
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("fanout-redis-tls-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create a directory for redis-server");
            let pki = generate(&dir, "fanout test CA");
            let child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--tls-cert-file")
                .arg(&pki.cert)
                .arg("--tls-key-file")
                .arg(&pki.key)
                .arg("--tls-ca-cert-file")
                .arg(&pki.ca)
                .args(["--tls-auth-clients", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let Ok(mut child) = child else { break };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: the port was taken meanwhile, or no TLS support
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return RedisTlsServer { port, dir, child };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!(
            "redis-server did not start with --tls-port: it needs a build with TLS (Debian's has it)"
        );
    }

    /// The URL to connect to: `rediss://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the certificate authority that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's own directory, for files a test writes next to it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RedisTlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
