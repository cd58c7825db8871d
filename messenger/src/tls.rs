//! The cluster certificate authority and the TLS configurations built on it.
//!
//! Every certificate names its holder as a DNS name `<entity>.<cluster id>.tidepool` (for
//! example `osd-3.4f2a….tidepool`): rustls refuses names such as `osd.3` whose last label is
//! numeric, and the cluster id keeps certificates of two clusters apart even if someone mixed
//! up their CAs.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tidepool_proto::cpu;

/// The ALPN protocol every Tidepool endpoint speaks.
pub const ALPN: &[u8] = b"tidepool/1";

/// Why certificates could not be made, stored or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A PEM file holds no certificate or key.
    #[error("{0}: no certificate or private key found")]
    EmptyPem(PathBuf),
    /// An entity or cluster name cannot appear in a certificate.
    #[error("{0:?} is not a valid name: use lowercase letters, digits and '-'")]
    BadName(String),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// quinn refused the TLS configuration.
    #[error("QUIC TLS configuration: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn check_name(name: &str) -> Result<(), TlsError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(TlsError::BadName(name.to_owned()))
    }
}

/// The DNS name in the certificate of `entity` in cluster `cluster_id`.
pub fn server_name(entity: &str, cluster_id: &str) -> String {
    format!("{entity}.{cluster_id}.tidepool")
}

/// A cluster's certificate authority: signs the certificate of every daemon and client.
#[derive(Debug)]
pub struct ClusterCa {
    cluster_id: String,
    key: KeyPair,
    cert_pem: String,
}

impl ClusterCa {
    /// A new CA for the cluster `cluster_id`.
    pub fn generate(cluster_id: &str) -> Result<ClusterCa, TlsError> {
        check_name(cluster_id)?;
        let key = KeyPair::generate()?;
        let cert = Self::params(cluster_id).self_signed(&key)?;
        Ok(ClusterCa {
            cluster_id: cluster_id.to_owned(),
            cert_pem: cert.pem(),
            key,
        })
    }

    /// The CA's parameters. Rebuilt identically from the cluster id when the CA is loaded, so
    /// certificates issued later chain to the stored CA certificate.
    fn params(cluster_id: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Tidepool");
        name.push(
            DnType::CommonName,
            format!("Tidepool cluster {cluster_id} CA"),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2125, 1, 1);
        params
    }

    /// The cluster this CA belongs to.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The CA certificate in PEM, which every member trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `entity` (`mon-0`, `osd-3`, `client-admin`): returns the
    /// certificate and private key, both in PEM.
    pub fn issue(&self, entity: &str) -> Result<(String, String), TlsError> {
        check_name(entity)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![server_name(entity, &self.cluster_id)])?;
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Tidepool");
        name.push(DnType::CommonName, entity);
        params.distinguished_name = name;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2125, 1, 1);
        let issuer = Issuer::new(Self::params(&self.cluster_id), &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes the CA into `dir` as `ca.pem` and `ca.key` (readable by the owner only).
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        write_file(&dir.join("ca.pem"), self.cert_pem.as_bytes(), false)?;
        write_file(
            &dir.join("ca.key"),
            self.key.serialize_pem().as_bytes(),
            true,
        )
    }

    /// Loads the CA that [`ClusterCa::save`] wrote into `dir`.
    pub fn load(dir: &Path, cluster_id: &str) -> Result<ClusterCa, TlsError> {
        let key_path = dir.join("ca.key");
        let key_pem = fs::read_to_string(&key_path).map_err(io_error(&key_path))?;
        let cert_path = dir.join("ca.pem");
        let cert_pem = fs::read_to_string(&cert_path).map_err(io_error(&cert_path))?;
        Ok(ClusterCa {
            cluster_id: cluster_id.to_owned(),
            key: KeyPair::from_pem(&key_pem)?,
            cert_pem,
        })
    }

    /// Issues a certificate for `entity` and writes it into `dir` as `<entity>.pem` and
    /// `<entity>.key`.
    pub fn issue_into(&self, entity: &str, dir: &Path) -> Result<(), TlsError> {
        let (cert, key) = self.issue(entity)?;
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        write_file(&dir.join(format!("{entity}.pem")), cert.as_bytes(), false)?;
        write_file(&dir.join(format!("{entity}.key")), key.as_bytes(), true)
    }
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    use std::io::Write as _;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(io_error(path))?;
    file.write_all(bytes).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Who an endpoint is: its certificate and key, and the CA it trusts.
#[derive(Debug)]
pub struct Identity {
    /// The cluster it belongs to.
    pub cluster_id: String,
    /// Its entity name (`osd-3`).
    pub entity: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

impl Identity {
    /// The key that authenticates QUIC stateless resets, derived from the private key so that
    /// it is the same after a restart: a peer still holding a connection to the previous
    /// process gets a reset it trusts at its next packet, and reconnects at once instead of
    /// sending into the void until the idle timeout.
    pub fn reset_key(&self) -> aws_lc_rs::hmac::Key {
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        context.update(b"tidepool stateless reset v1");
        context.update(self.key.secret_der());
        aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, context.finish().as_ref())
    }
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            cluster_id: self.cluster_id.clone(),
            entity: self.entity.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
        }
    }
}

impl Identity {
    /// An identity from PEM text: the CA certificate, and this entity's certificate and key.
    pub fn from_pem(
        cluster_id: &str,
        entity: &str,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Identity, TlsError> {
        let label = || PathBuf::from(format!("{entity} (pem)"));
        let certs = |pem: &str| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            rustls_pemfile::certs(&mut pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| TlsError::Io {
                    path: label(),
                    source,
                })
        };
        let mut roots = RootCertStore::empty();
        for cert in certs(ca_pem)? {
            roots.add(cert)?;
        }
        let chain = certs(cert_pem)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|source| TlsError::Io {
                path: label(),
                source,
            })?
            .ok_or_else(|| TlsError::EmptyPem(label()))?;
        if chain.is_empty() || roots.is_empty() {
            return Err(TlsError::EmptyPem(label()));
        }
        Ok(Identity {
            cluster_id: cluster_id.to_owned(),
            entity: entity.to_owned(),
            chain,
            key,
            roots: Arc::new(roots),
        })
    }

    /// Loads `entity`'s identity from a cluster folder laid out by `tidepool cluster init`:
    /// `ca.pem` at the top and `certs/<entity>.pem`, `certs/<entity>.key`.
    pub fn load(cluster_dir: &Path, cluster_id: &str, entity: &str) -> Result<Identity, TlsError> {
        let read = |path: PathBuf| fs::read_to_string(&path).map_err(io_error(&path));
        let certs = cluster_dir.join("certs");
        Identity::from_pem(
            cluster_id,
            entity,
            &read(cluster_dir.join("ca.pem"))?,
            &read(certs.join(format!("{entity}.pem")))?,
            &read(certs.join(format!("{entity}.key")))?,
        )
    }

    /// aws-lc's TLS 1.3 suites, AES-128-GCM first: it is what every QUIC stack must support,
    /// and at 10 AES rounds to AES-256's 14 it encrypts bulk data a third faster (AES-GCM is
    /// a seventh to a fifth of all CPU under 4 MiB transfers). Its AES-GCM code is the faster
    /// of two libraries on this CPU ([`ring_aes_gcm_is_faster`]).
    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if ring_aes_gcm_is_faster() {
            for suite in &mut provider.cipher_suites {
                if suite.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 {
                    *suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
                }
            }
        }
        provider
            .cipher_suites
            .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        Arc::new(provider)
    }

    fn rustls_server(&self) -> Result<rustls::ServerConfig, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), Self::provider())
                .build()?;
        let mut tls = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        Ok(tls)
    }

    fn rustls_client(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        Ok(tls)
    }

    /// The server side: TLS 1.3 only, and a client certificate from the cluster CA required.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let crypto = QuicServerConfig::try_from(self.rustls_server()?)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport_config()));
        Ok(config)
    }

    /// The client side: trusts only the cluster CA and presents this identity's certificate.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let crypto = QuicClientConfig::try_from(self.rustls_client()?)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport_config()));
        Ok(config)
    }

    /// The same TLS settings for TLS over TCP (benchmarks compare the two transports with the
    /// same certificates).
    pub fn rustls_configs(
        &self,
    ) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), TlsError> {
        Ok((
            Arc::new(self.rustls_server()?),
            Arc::new(self.rustls_client()?),
        ))
    }
}

/// Whether ring's AES-GCM outruns aws-lc's here. aws-lc uses 512-bit vector AES where the CPU
/// has AVX-512 (1.35x ring there); without AVX-512 it falls back to 128-bit AES-NI code, while
/// ring uses 256-bit vector AES (VAES with AVX2): 4.4 against 2.0 GB/s on an AMD EPYC without
/// AVX-512 (docs/BENCHMARKS.md). Elsewhere both use the same AES-NI code.
fn ring_aes_gcm_is_faster() -> bool {
    cpu::avx2_vector_crypto() && !cpu::avx512_vector_crypto()
}

/// QUIC settings for a LAN: windows far above quinn's internet defaults, many concurrent
/// streams, datagrams as large as the path allows
/// (`socket::UDP_PAYLOAD_BYTES_MAX` at most), and keep-alives so a dead peer is noticed.
///
/// A connection silent for 4 s (four missed keep-alives) is closed. That bounds how long a
/// peer's messages vanish into a connection to a process that has since restarted: the new
/// process does not know the old connection, so nothing sent on it arrives until it is closed
/// and the next message reconnects. (A stateless reset, keyed by [`Identity::reset_key`],
/// usually closes it sooner.)
fn transport_config() -> quinn::TransportConfig {
    use std::time::Duration;
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(quinn::VarInt::from_u32(16 << 20))
        .receive_window(quinn::VarInt::from_u32(64 << 20))
        .send_window(64 << 20)
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(1024))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(1024))
        .keep_alive_interval(Some(Duration::from_secs(1)))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(4)).expect("4 s fits a VarInt"),
        ))
        .initial_mtu(1400);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(crate::socket::UDP_PAYLOAD_BYTES_MAX);
    transport.mtu_discovery_config(Some(mtu));
    // Fewer ACK-only datagrams: the peer acknowledges every eighth ack-eliciting packet (or
    // after its ACK delay) instead of every second. Requests and replies carry ACKs with them
    // both ways; under 4 KiB writes this took the datagrams per write from 9.6 to 7.8.
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    transport.ack_frequency_config(Some(acks));
    transport
}

/// Ack-eliciting packets a peer may receive before it must acknowledge them (the QUIC
/// acknowledgement frequency extension; RFC 9000's behaviour is 1).
const ACK_ELICITING_THRESHOLD: u32 = 7;
