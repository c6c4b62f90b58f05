//! SNI routing with real TLS end to end: nodes that terminate TLS (each with a certificate of
//! a test CA) and answer with their own name, clients that set the server name and verify
//! the certificate. tierlb sees only the ClientHello; the handshake and the bytes after it
//! pass through untouched, whatever the pace of the hello.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use common::{sha256, ConfigFile, Tierlb};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Every name the tests ask for, in every node's certificate: routing, not the certificate,
/// decides which node answers.
const NAMES: [&str; 3] = ["a.example.test", "*.b.example.test", "y.x.b.example.test"];

/// A test CA and the client configuration that trusts it.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    client: Arc<ClientConfig>,
}

/// The *ring* provider: it builds with the C compiler alone (aws-lc-rs needs cmake). Its lack
/// of post-quantum key exchange is nothing to a test of routing.
#[allow(
    deprecated,
    reason = "ring lacks post-quantum key exchange, which a routing test does not need"
)]
fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).expect("trust the CA");
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Pki {
            ca,
            client: Arc::new(client),
        }
    }

    /// A TLS node named `name`: after the handshake it sends its name, then echoes.
    async fn node(&self, name: &str) -> SocketAddr {
        let key = KeyPair::generate().expect("key");
        let sans: Vec<String> = NAMES.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(sans)
            .expect("params")
            .signed_by(&key, &self.ca)
            .expect("certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::clone(cert.der())], key)
            .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let greeting = format!("{name}\n");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, greeting) = (acceptor.clone(), greeting.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let (mut r, mut w) = tokio::io::split(tls);
                    if w.write_all(greeting.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        addr
    }
}

/// A TCP stream that writes its first `trickle` bytes one per write (one per segment).
struct Trickle {
    inner: TcpStream,
    trickle: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let len = if self.trickle > 0 {
            1.min(buf.len())
        } else {
            buf.len()
        };
        let written = Pin::new(&mut self.inner).poll_write(cx, &buf[..len]);
        if let Poll::Ready(Ok(n)) = written {
            self.trickle = self.trickle.saturating_sub(n);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connects through `addr` with `sni` (its first `trickle` bytes one at a time), completes
/// the TLS handshake with the node, and returns the node's name with the stream.
async fn connect(
    pki: &Pki,
    addr: SocketAddr,
    sni: &str,
    trickle: usize,
) -> (String, BufReader<tokio_rustls::client::TlsStream<Trickle>>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    let tls = TlsConnector::from(Arc::clone(&pki.client))
        .connect(
            name,
            Trickle {
                inner: tcp,
                trickle,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("TLS with {sni} through tierlb: {e}"));
    let mut reader = BufReader::new(tls);
    let mut greeting = String::new();
    reader
        .read_line(&mut greeting)
        .await
        .expect("the node's name");
    (greeting.trim_end().to_owned(), reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_reach_their_services_nodes_end_to_end() {
    let pki = Pki::new();
    let (a1, a2, b1, o1) = (
        pki.node("a1").await,
        pki.node("a2").await,
        pki.node("b1").await,
        pki.node("o1").await,
    );
    let config = ConfigFile::new(&format!(
        "[services.a]\nlisten = \"127.0.0.1:0\"\nsni = [\"a.example.test\"]\nnodes = [\"{a1}\", \"{a2}\"]\n\
         [services.b]\nlisten = \"127.0.0.1:0\"\nsni = [\"*.b.example.test\"]\nnodes = [\"{b1}\"]\n\
         [services.other]\nlisten = \"127.0.0.1:0\"\nnodes = [\"{o1}\"]\n"
    ));
    let tierlb = Tierlb::with_config(&config);
    let addr = tierlb.addr;
    for (sni, want) in [
        ("a.example.test", &["a1", "a2"][..]),
        ("x.b.example.test", &["b1"][..]),
        ("y.x.b.example.test", &["o1"][..]),
    ] {
        let mut held = Vec::new();
        let mut split = BTreeMap::new();
        for _ in 0..30 {
            let (name, stream) = connect(&pki, addr, sni, 0).await;
            assert!(want.contains(&name.as_str()), "{sni} reached {name}");
            *split.entry(name).or_insert(0) += 1;
            held.push(stream);
        }
        let counts: Vec<i32> = split.values().copied().collect();
        let even = vec![30 / i32::try_from(want.len()).expect("few"); want.len()];
        assert_eq!(counts, even, "{sni}: balanced over its service's nodes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_written_one_byte_at_a_time_completes_tls_and_a_mebibyte_comes_back_whole() {
    let pki = Pki::new();
    let (b1, o1) = (pki.node("b1").await, pki.node("o1").await);
    let config = ConfigFile::new(&format!(
        "[services.b]\nlisten = \"127.0.0.1:0\"\nsni = [\"*.b.example.test\"]\nnodes = [\"{b1}\"]\n\
         [services.other]\nlisten = \"127.0.0.1:0\"\nnodes = [\"{o1}\"]\n"
    ));
    let tierlb = Tierlb::with_config(&config);
    let (name, stream) = connect(&pki, tierlb.addr, "x.b.example.test", 4096).await;
    assert_eq!(name, "b1");
    let data = common::pattern(19, 1 << 20);
    let (mut r, mut w) = tokio::io::split(stream);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.expect("send");
        w.flush().await.expect("flush");
        w
    });
    let mut back = vec![0u8; data.len()];
    r.read_exact(&mut back).await.expect("the echo");
    drop(writer.await.expect("writer"));
    assert_eq!(
        sha256(&back),
        sha256(&data),
        "1 MiB through TLS through tierlb, intact"
    );
}
