//! The container images' health probe: `healthcheck PORT PATH` sends `GET PATH` to `127.0.0.1:PORT` and exits
//! 0 on a `200` status line, 1 otherwise (no answer within 2 s, another status). The runtime image is
//! distroless (no shell, no curl), so the probe is this small std-only program, built in the image's builder
//! stage with `rustc -O` and tested by `deploy-check/tests/deploy/container.rs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

fn probe(port: u16, path: &str) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(e.to_string()),
        }
        if head[..read].contains(&b'\n') {
            break;
        }
    }
    let status = String::from_utf8_lossy(&head[..read]);
    let status = status.lines().next().unwrap_or_default();
    let mut words = status.split(' ');
    match (words.next(), words.next()) {
        (Some("HTTP/1.0" | "HTTP/1.1"), Some("200")) => Ok(()),
        _ if status.is_empty() => Err("no answer".to_owned()),
        _ => Err(status.to_owned()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(port), Some(path)) = (args.first().and_then(|p| p.parse().ok()), args.get(1)) else {
        eprintln!("usage: healthcheck PORT PATH");
        return ExitCode::from(2);
    };
    match probe(port, path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("unhealthy: {why}");
            ExitCode::FAILURE
        }
    }
}
