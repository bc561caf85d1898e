//! The client over TLS: a local rustls server with a certificate generated for the test (rcgen),
//! a client that trusts exactly that certificate, signatures verified by the server as in plain
//! HTTP. With an HTTP/1.1-only server, sequential calls reuse one kept-alive connection; when the
//! server offers `h2` through ALPN the client takes it, and concurrent calls share one connection.
//! A client that does not trust the certificate fails with a transport error.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::support::REGION;
use bytes::Bytes;
use futures::future::join_all;
use mgmt_client::{ClientOptions, CredentialsSource, MgmtClient, MgmtError, TlsRoots};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Pki {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

fn pki() -> Pki {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    Pki {
        cert: generated.cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()),
    }
}

fn acceptor(pki: &Pki, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert.clone()],
            PrivateKeyDer::Pkcs8(pki.key.clone_key()),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn client_trusting(pki: Option<&Pki>) -> MgmtClient {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pki) = pki {
        roots.add(pki.cert.clone()).unwrap();
    }
    let options = ClientOptions {
        tls_roots: TlsRoots::Custom(roots),
        ..ClientOptions::default()
    };
    MgmtClient::new(
        options,
        CredentialsSource::fixed(crate::support::credentials(None)),
    )
    .unwrap()
}

#[tokio::test]
async fn http1_over_tls_keeps_one_connection_alive() {
    let pki = pki();
    let server = crate::support::serve(None, Some(acceptor(&pki, &[b"http/1.1"]))).await;
    let client = client_trusting(Some(&pki));
    let endpoint = client
        .endpoint(
            &format!("https://localhost:{}/prod", server.addr.port()),
            REGION,
        )
        .unwrap();
    for n in 0..20 {
        let body = Bytes::from(vec![b'a'; n * 1000]);
        assert_eq!(
            client.post_to_connection(&endpoint, "abc=", body).await,
            Ok(())
        );
    }
    assert_eq!(
        client
            .post_to_connection(&endpoint, "gone", Bytes::new())
            .await,
        Err(MgmtError::Gone)
    );
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        1,
        "keep-alive: one TCP connection for 21 calls"
    );
    assert_eq!(
        *server.alpn.lock().unwrap(),
        vec![Some(b"http/1.1".to_vec())]
    );
    assert_eq!(server.state.verified.load(Ordering::SeqCst), 21);
    assert_eq!(server.state.refused.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn http2_is_used_when_offered_and_multiplexes_concurrent_calls() {
    let pki = pki();
    let server = crate::support::serve(None, Some(acceptor(&pki, &[b"h2", b"http/1.1"]))).await;
    let client = client_trusting(Some(&pki));
    let endpoint = client
        .endpoint(
            &format!("https://127.0.0.1:{}/prod", server.addr.port()),
            REGION,
        )
        .unwrap();
    // One call to open the connection, then 32 at once on it.
    client
        .post_to_connection(&endpoint, "first", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let calls = (0..32).map(|n| {
        let (client, endpoint) = (client.clone(), endpoint.clone());
        async move {
            client
                .post_to_connection(&endpoint, &format!("conn-{n}="), Bytes::from_static(b"{}"))
                .await
        }
    });
    for result in join_all(calls).await {
        assert_eq!(result, Ok(()));
    }
    assert_eq!(*server.alpn.lock().unwrap(), vec![Some(b"h2".to_vec())]);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    // Over HTTP/2 the host arrives as :authority; the signature still verifies.
    assert_eq!(server.state.verified.load(Ordering::SeqCst), 33);
    assert_eq!(server.state.refused.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_transport_error() {
    let pki = pki();
    let server = crate::support::serve(None, Some(acceptor(&pki, &[b"http/1.1"]))).await;
    let client = client_trusting(None);
    let endpoint = client
        .endpoint(
            &format!("https://localhost:{}/prod", server.addr.port()),
            REGION,
        )
        .unwrap();
    let result = client
        .post_to_connection(&endpoint, "abc", Bytes::new())
        .await;
    assert!(
        matches!(&result, Err(MgmtError::Transport(m)) if m.contains("certificate")),
        "{result:?}"
    );
    assert_eq!(server.state.verified.load(Ordering::SeqCst), 0);
}
