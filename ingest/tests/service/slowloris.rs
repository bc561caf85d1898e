//! Slow and idle clients cannot hold ingest's sockets: a request head not completed within the
//! header-read timeout, or a keep-alive connection idle that long, is closed; a body trickled past the
//! request timeout gets 408. Normal traffic keeps being served meanwhile. Raw TCP against the real
//! listener.

use crate::support::Ingest;
use reqwest::StatusCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_millis(600);

fn addr(ingest: &Ingest) -> String {
    ingest.url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return (seen, Instant::now()),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_while_others_are_served() {
    let ingest = Ingest::start(&[
        &format!("--header-read-timeout-ms={}", HEADER_TIMEOUT.as_millis()),
        "--request-timeout-ms=600",
    ])
    .await;
    let addr = addr(&ingest);

    // Twenty slow-loris clients: a partial head, then one more header byte every 100 ms, forever.
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..20 {
        let addr = addr.clone();
        slow.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            stream
                .write_all(b"POST /ws/connect HTTP/1.1\r\nHost: ingest\r\nX-Slow: ")
                .await
                .unwrap();
            let (mut reader, mut writer) = stream.into_split();
            let trickle = tokio::spawn(async move {
                while writer.write_all(b"a").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let mut buf = [0u8; 256];
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            trickle.abort();
            Instant::now()
        }));
    }
    // Normal traffic goes on meanwhile.
    let mut served = 0;
    while started.elapsed() < HEADER_TIMEOUT {
        let r = ingest
            .http
            .get(format!("{}/healthz", ingest.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        served += 1;
    }
    assert!(served > 0);
    for client in slow {
        let closed = client.await.unwrap().duration_since(started);
        assert!(
            closed >= HEADER_TIMEOUT - Duration::from_millis(50) && closed < HEADER_TIMEOUT * 4,
            "a slow client was closed after {closed:?}"
        );
    }

    // An idle keep-alive connection is closed after the same time.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: ingest\r\n\r\n")
        .await
        .unwrap();
    let answered = Instant::now();
    let (seen, closed) = until_closed(&mut stream).await;
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{seen:?}");
    let idle = closed.duration_since(answered);
    assert!(
        idle >= HEADER_TIMEOUT - Duration::from_millis(50) && idle < HEADER_TIMEOUT * 4,
        "an idle connection was closed after {idle:?}"
    );

    // A body trickled past the request timeout gets 408 in the JSON error shape.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /v1/broadcast HTTP/1.1\r\nHost: ingest\r\nAuthorization: Bearer {}\r\nContent-Length: 1000\r\n\r\n{{",
                crate::support::API_KEY
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (seen, _) = until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains(r#"{"error":{"code":"request_timeout""#),
        "{text}"
    );
    assert!(ingest.jobs().await.is_empty(), "nothing was queued");
}
