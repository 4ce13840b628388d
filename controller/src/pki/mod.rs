//! The fleet's certificate authority, made by `fleet-controller init`: the
//! CA itself, the managed broker's server certificate and the controller's
//! own client certificate, as PEM files under `DATA/pki/`. Private keys are
//! written with mode 0600. Every certificate's subject, names, validity and
//! key usage are set here, never copied from a request.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The controller's own MQTT identity (its certificate name, user name
/// and client id). The dot makes it impossible as a device id
/// (`[A-Za-z0-9_-]`), so no enrolled device can ever hold the controller's
/// broker rights.
pub const CONTROLLER_IDENTITY: &str = "fleet.controller";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{dir} is already initialised (found {found}); refusing to overwrite its CA")]
    AlreadyInitialised { dir: PathBuf, found: PathBuf },
    #[error("{dir} is not initialised; run: fleet-controller init --data-dir {dir}")]
    NotInitialised { dir: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate error: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("unusable {what}: {reason}")]
    Tls { what: &'static str, reason: String },
}

fn tls_err(what: &'static str) -> impl Fn(String) -> PkiError {
    move |reason| PkiError::Tls { what, reason }
}

/// Where the PKI files of a data directory live.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub dir: PathBuf,
}

impl PkiPaths {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("pki"),
        }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn broker_cert(&self) -> PathBuf {
        self.dir.join("broker.crt")
    }
    pub fn broker_key(&self) -> PathBuf {
        self.dir.join("broker.key")
    }
    /// The HTTPS API's own certificate (not the broker's: a leak of one
    /// key does not let anyone pose as the other service).
    pub fn api_cert(&self) -> PathBuf {
        self.dir.join("api.crt")
    }
    pub fn api_key(&self) -> PathBuf {
        self.dir.join("api.key")
    }
    pub fn controller_cert(&self) -> PathBuf {
        self.dir.join("controller.crt")
    }
    pub fn controller_key(&self) -> PathBuf {
        self.dir.join("controller.key")
    }
    /// The client certificate of a managed provincial broker's bridge
    /// (certificate name `bridge.{name}`).
    pub fn bridge_cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("bridge-{name}.crt"))
    }
    pub fn bridge_key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("bridge-{name}.key"))
    }
    /// The certificate revocation list the broker checks.
    pub fn crl(&self) -> PathBuf {
        self.dir.join("ca.crl")
    }

    pub fn is_initialised(&self) -> bool {
        self.ca_cert().is_file() && self.ca_key().is_file()
    }

    pub fn require(&self, data_dir: &Path) -> Result<(), PkiError> {
        if self.is_initialised() {
            Ok(())
        } else {
            Err(PkiError::NotInitialised {
                dir: data_dir.to_owned(),
            })
        }
    }
}

/// Write `contents` to a new file, readable only by its owner if `private`.
pub fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if private {
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Sandogh");
    dn.push(DnType::CommonName, "Sandogh fleet CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(365 * 10);
    p
}

/// Parameters of a leaf certificate whose every field the CA decides.
pub fn leaf_params(
    common_name: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    valid_for: Duration,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Sandogh");
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.subject_alt_names = sans;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    // Back-dated for clocks a little behind, by at most a tenth of the
    // certificate's life (a certificate of minutes, in tests, stays one).
    p.not_before = now - std::cmp::min(valid_for / 10_i32, Duration::minutes(5));
    p.not_after = now + valid_for;
    p
}

/// The CA, loaded from its files, to sign with.
pub struct Ca {
    key: KeyPair,
    cert_pem: String,
}

impl Ca {
    pub fn load(paths: &PkiPaths) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(&read(&paths.ca_key())?)?;
        Ok(Self {
            key,
            cert_pem: read(&paths.ca_cert())?,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A CRL listing every `revoked` certificate, signed now. A revocation
    /// time that cannot be a certificate time is an error, never a
    /// certificate left out.
    pub fn crl(
        &self,
        number: u64,
        revoked: &[crate::domain::enrolment::RevokedCert],
    ) -> Result<String, PkiError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let now = OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(3650),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|c| {
                    let secs = i64::try_from(c.revoked_at_ms / 1000).unwrap_or(i64::MAX);
                    Ok(rcgen::RevokedCertParams {
                        serial_number: rcgen::SerialNumber::from_slice(&c.serial),
                        revocation_time: OffsetDateTime::from_unix_timestamp(secs).map_err(
                            |e| PkiError::Tls {
                                what: "revocation time",
                                reason: format!("{} ms: {e}", c.revoked_at_ms),
                            },
                        )?,
                        reason_code: Some(rcgen::RevocationReason::CessationOfOperation),
                        invalidity_date: None,
                    })
                })
                .collect::<Result<_, PkiError>>()?,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&issuer)?.pem()?)
    }

    /// Sign `params` for `public_key`.
    pub fn sign(
        &self,
        params: &CertificateParams,
        public_key: &impl rcgen::PublicKeyData,
    ) -> Result<String, PkiError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        Ok(params.signed_by(public_key, &issuer)?.pem())
    }
}

/// The read-only identity that may watch every fleet topic on the central
/// broker (benches count the stream with it; operators can monitor).
pub const OBSERVER_IDENTITY: &str = "fleet.observer";

/// Issue a client certificate named `common_name` from the fleet CA, with
/// a new key: (certificate PEM, key PEM). For the bridges of provincial
/// brokers (`bridge.{name}`) and the observer; never a device's name (a
/// device gets its certificate at enrolment, from its own key).
pub fn issue_client(
    paths: &PkiPaths,
    common_name: &str,
    valid_for: Duration,
) -> Result<(String, String), PkiError> {
    issue_leaf(
        paths,
        common_name,
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        valid_for,
    )
}

/// A certificate from the fleet CA with a new key and a random serial:
/// (certificate PEM, key PEM).
fn issue_leaf(
    paths: &PkiPaths,
    common_name: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    valid_for: Duration,
) -> Result<(String, String), PkiError> {
    let ca = Ca::load(paths)?;
    let key = KeyPair::generate()?;
    let mut params = leaf_params(common_name, sans, usage, valid_for);
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    Ok((ca.sign(&params, &key)?, key.serialize_pem()))
}

/// How long the certificates the controller issues live, and when they are
/// renewed (`[pki]` in the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct CertPolicy {
    pub device: Duration,
    pub server: Duration,
    /// The fraction of a certificate's life after which it is renewed.
    pub renew_at: f64,
    /// How often the controller checks its own certificates.
    pub check_every: std::time::Duration,
}

impl Default for CertPolicy {
    fn default() -> Self {
        Self {
            device: Duration::days(365),
            server: Duration::days(365 * 2),
            renew_at: 0.66,
            check_every: std::time::Duration::from_secs(3600),
        }
    }
}

/// A server certificate for 127.0.0.1, localhost and `names` (host names
/// or IP addresses), valid `valid_for`. The key and then the certificate
/// are written whole and renamed into place, so a reader sees the old pair
/// or the new one.
fn issue_server_cert(
    ca: &Ca,
    name: &str,
    cert: &Path,
    key: &Path,
    valid_for: Duration,
    names: &[String],
) -> Result<(), PkiError> {
    let k = KeyPair::generate()?;
    let params = leaf_params(
        name,
        server_sans(names)?,
        ExtendedKeyUsagePurpose::ServerAuth,
        valid_for,
    );
    replace_pair(cert, &ca.sign(&params, &k)?, key, &k.serialize_pem())
}

/// A host name a certificate may carry: 1-253 of `a-z A-Z 0-9 . -`, not
/// starting or ending with a dot or a dash, or an IP address.
pub fn valid_server_name(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
        || (!name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !name.starts_with(['.', '-'])
            && !name.ends_with(['.', '-']))
}

/// Subject alternative names of a server certificate: localhost,
/// 127.0.0.1, and `names` (an IP address as one, anything else as a DNS
/// name). An unusable name is an error, never left out.
fn server_sans(names: &[String]) -> Result<Vec<SanType>, PkiError> {
    let local = [
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
    ];
    let named = names.iter().map(|n| {
        if !valid_server_name(n) {
            return Err(PkiError::Tls {
                what: "server name",
                reason: format!("{n:?}: a host name (a-z 0-9 . -) or an IP address"),
            });
        }
        Ok(match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(n.as_str().try_into()?),
        })
    });
    local.into_iter().map(Ok).chain(named).collect()
}

/// The names a server certificate carries besides localhost and 127.0.0.1
/// (what `init --server-name` added), so that a renewal keeps them. An
/// unreadable certificate carries none.
fn extra_server_names(cert: &Path) -> Vec<String> {
    with_cert_file(cert, |cert| {
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return Vec::new();
        };
        san.value
            .general_names
            .iter()
            .filter_map(|g| match g {
                x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(b) => <[u8; 4]>::try_from(*b)
                    .map(std::net::IpAddr::from)
                    .or_else(|_| <[u8; 16]>::try_from(*b).map(std::net::IpAddr::from))
                    .ok()
                    .map(|ip| ip.to_string()),
                _ => None,
            })
            .filter(|n| n != "localhost" && n != "127.0.0.1")
            .collect()
    })
    .unwrap_or_default()
}

/// A server certificate from the fleet CA for a broker set up elsewhere
/// (a provincial broker Ansible runs): certificate name `name`, valid for
/// `names` besides localhost and 127.0.0.1, with a new key: (certificate
/// PEM, key PEM).
pub fn issue_server(
    paths: &PkiPaths,
    name: &str,
    names: &[String],
    valid_for: Duration,
) -> Result<(String, String), PkiError> {
    issue_leaf(
        paths,
        name,
        server_sans(names)?,
        ExtendedKeyUsagePurpose::ServerAuth,
        valid_for,
    )
}

fn replace_pair(cert: &Path, cert_pem: &str, key: &Path, key_pem: &str) -> Result<(), PkiError> {
    let tmp = |p: &Path| {
        let mut name = p.as_os_str().to_owned();
        name.push(".tmp");
        PathBuf::from(name)
    };
    write_file(&tmp(key), key_pem.as_bytes(), true)?;
    write_file(&tmp(cert), cert_pem.as_bytes(), false)?;
    for p in [key, cert] {
        fs::rename(tmp(p), p).map_err(|source| PkiError::Write {
            path: p.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// The controller's own client certificate (its MQTT identity).
fn issue_controller_cert(ca: &Ca, paths: &PkiPaths, valid_for: Duration) -> Result<(), PkiError> {
    let k = KeyPair::generate()?;
    let params = leaf_params(
        CONTROLLER_IDENTITY,
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        valid_for,
    );
    replace_pair(
        &paths.controller_cert(),
        &ca.sign(&params, &k)?,
        &paths.controller_key(),
        &k.serialize_pem(),
    )
}

/// A kind of certificate the controller watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    Ca,
    Broker,
    Api,
    Controller,
    Device,
}

impl CertKind {
    pub const SERVICES: [CertKind; 3] = [CertKind::Broker, CertKind::Api, CertKind::Controller];

    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::Ca => "ca",
            CertKind::Broker => "broker",
            CertKind::Api => "api",
            CertKind::Controller => "controller",
            CertKind::Device => "device",
        }
    }
}

/// The validity of a PEM certificate file: (not_before_ms, not_after_ms, serial hex).
pub fn validity(path: &Path) -> Result<(u64, u64, String), PkiError> {
    with_cert_file(path, |cert| {
        let ms = |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0) * 1000;
        (
            ms(cert.validity().not_before),
            ms(cert.validity().not_after),
            cert.tbs_certificate.raw_serial_as_string().replace(':', ""),
        )
    })
}

/// `f` applied to the certificate in the PEM file at `path`.
fn with_cert_file<T>(
    path: &Path,
    f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> T,
) -> Result<T, PkiError> {
    let bytes = fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bad = |e: String| PkiError::Tls {
        what: "certificate file",
        reason: format!("{}: {e}", path.display()),
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    Ok(f(&cert))
}

impl PkiPaths {
    pub fn cert_of(&self, kind: CertKind) -> Option<PathBuf> {
        match kind {
            CertKind::Ca => Some(self.ca_cert()),
            CertKind::Broker => Some(self.broker_cert()),
            CertKind::Api => Some(self.api_cert()),
            CertKind::Controller => Some(self.controller_cert()),
            CertKind::Device => None,
        }
    }
}

/// Renew the broker's, the API's and the controller's certificates that are
/// past `policy.renew_at` of their life (or unreadable) at `now_ms`; the
/// kinds renewed. The CA stays the same, so devices keep trusting them.
pub fn renew_service_certs(
    paths: &PkiPaths,
    policy: &CertPolicy,
    now_ms: u64,
) -> Result<Vec<CertKind>, PkiError> {
    let mut renewed = Vec::new();
    let mut ca = None;
    for kind in CertKind::SERVICES {
        let Some(cert) = paths.cert_of(kind) else {
            continue;
        };
        let due = is_due(&cert, policy, now_ms);
        if !due {
            continue;
        }
        let ca = match &ca {
            Some(ca) => ca,
            None => ca.insert(Ca::load(paths)?),
        };
        match kind {
            CertKind::Broker => issue_server_cert(
                ca,
                "fleet-broker",
                &paths.broker_cert(),
                &paths.broker_key(),
                policy.server,
                &extra_server_names(&cert),
            )?,
            CertKind::Api => issue_server_cert(
                ca,
                "fleet-api",
                &paths.api_cert(),
                &paths.api_key(),
                policy.server,
                &extra_server_names(&cert),
            )?,
            CertKind::Controller => issue_controller_cert(ca, paths, policy.server)?,
            CertKind::Ca | CertKind::Device => continue,
        }
        renewed.push(kind);
    }
    Ok(renewed)
}

/// Whether the certificate in `cert` is past its renewal point, lives
/// longer than the configured lifetime allows (it was shortened), or is
/// unreadable.
fn is_due(cert: &Path, policy: &CertPolicy, now_ms: u64) -> bool {
    match validity(cert) {
        Ok((from, to, _)) => {
            let longest = u64::try_from(policy.server.whole_milliseconds()).unwrap_or(u64::MAX);
            now_ms >= crate::domain::renewal::due_at_ms(from, to, policy.renew_at)
                || to > now_ms.saturating_add(longest).saturating_add(600_000)
        }
        Err(_) => true,
    }
}

/// The client certificate of managed provincial broker `name`'s bridge,
/// issued when missing and renewed like the service certificates (same
/// lifetime and renewal point). Whether it was (re)issued.
pub fn ensure_bridge_cert(
    paths: &PkiPaths,
    name: &str,
    policy: &CertPolicy,
    now_ms: u64,
) -> Result<bool, PkiError> {
    let cert = paths.bridge_cert(name);
    if paths.bridge_key(name).is_file() && !is_due(&cert, policy, now_ms) {
        return Ok(false);
    }
    let (cert_pem, key_pem) = issue_client(
        paths,
        &fleet_protocol::topic::bridge_identity(name),
        policy.server,
    )?;
    replace_pair(&cert, &cert_pem, &paths.bridge_key(name), &key_pem)?;
    Ok(true)
}

/// A data directory made before the API had its own certificate gets one.
pub fn ensure_api_cert(paths: &PkiPaths) -> Result<bool, PkiError> {
    if paths.api_cert().is_file() && paths.api_key().is_file() {
        return Ok(false);
    }
    let ca = Ca::load(paths)?;
    issue_server_cert(
        &ca,
        "fleet-api",
        &paths.api_cert(),
        &paths.api_key(),
        CertPolicy::default().server,
        &extra_server_names(&paths.broker_cert()),
    )?;
    Ok(true)
}

/// How `init` sets a data directory's PKI up.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// A CA made elsewhere, (certificate PEM, key PEM), instead of a new one.
    pub ca: Option<(String, String)>,
    /// Host names or addresses the broker's and the API's certificates
    /// carry besides localhost and 127.0.0.1 (where devices, bridges and
    /// operators reach them); renewals keep them.
    pub server_names: Vec<String>,
}

/// Check that `cert_pem` is a CA certificate and `key_pem` its key.
fn check_ca(cert_pem: &str, key_pem: &str) -> Result<KeyPair, PkiError> {
    let bad = tls_err("CA");
    let key = KeyPair::from_pem(key_pem).map_err(|e| bad(format!("the key: {e}")))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| bad(format!("the certificate is not PEM: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad(format!("the certificate: {e}")))?;
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca);
    if !is_ca {
        return Err(bad(
            "the certificate is not a CA's (basic constraints)".into()
        ));
    }
    if cert.tbs_certificate.subject_pki.raw
        != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
    {
        return Err(bad("the key is not the certificate's".into()));
    }
    Ok(key)
}

pub fn init(data_dir: &Path) -> Result<PkiPaths, PkiError> {
    init_with(data_dir, &InitOptions::default())
}

pub fn init_with(data_dir: &Path, opts: &InitOptions) -> Result<PkiPaths, PkiError> {
    let paths = PkiPaths::new(data_dir);
    if paths.ca_key().exists() {
        return Err(PkiError::AlreadyInitialised {
            dir: data_dir.to_owned(),
            found: paths.ca_key(),
        });
    }
    // Checked before anything is written: a bad name or CA leaves no
    // half-made directory behind.
    server_sans(&opts.server_names)?;
    let (ca_key_pem, ca_cert_pem) = match &opts.ca {
        Some((cert, key)) => {
            check_ca(cert, key)?;
            (key.clone(), cert.clone())
        }
        None => {
            let ca_key = KeyPair::generate()?;
            let ca_cert = ca_params().self_signed(&ca_key)?;
            (ca_key.serialize_pem(), ca_cert.pem())
        }
    };
    fs::create_dir_all(&paths.dir).map_err(|source| PkiError::Write {
        path: paths.dir.clone(),
        source,
    })?;
    write_file(&paths.ca_key(), ca_key_pem.as_bytes(), true)?;
    write_file(&paths.ca_cert(), ca_cert_pem.as_bytes(), false)?;
    let ca = Ca::load(&paths)?;

    let server = CertPolicy::default().server;
    issue_server_cert(
        &ca,
        "fleet-broker",
        &paths.broker_cert(),
        &paths.broker_key(),
        server,
        &opts.server_names,
    )?;
    issue_server_cert(
        &ca,
        "fleet-api",
        &paths.api_cert(),
        &paths.api_key(),
        server,
        &opts.server_names,
    )?;
    issue_controller_cert(&ca, &paths, server)?;
    write_file(&paths.crl(), ca.crl(1, &[])?.as_bytes(), false)?;
    Ok(paths)
}

/// A rustls client configuration (ring) trusting `ca` and presenting `cert`:
/// the controller's own MQTT identity.
pub fn tls_client_config(
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
) -> Result<std::sync::Arc<rustls::ClientConfig>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        let c = c.map_err(|e| tls_err("CA certificate")(e.to_string()))?;
        roots
            .add(c)
            .map_err(|e| tls_err("CA certificate")(e.to_string()))?;
    }
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err("controller certificate")(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_slice(key).map_err(|e| tls_err("controller key")(e.to_string()))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("TLS versions")(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls_err("controller certificate")(e.to_string()))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_makes_a_ca_and_refuses_to_run_twice() {
        let dir = tempfile::tempdir().unwrap();
        let paths = PkiPaths::new(dir.path());
        assert!(matches!(
            paths.require(dir.path()),
            Err(PkiError::NotInitialised { .. })
        ));
        init(dir.path()).unwrap();
        assert!(paths.is_initialised());
        for key in [
            paths.ca_key(),
            paths.broker_key(),
            paths.api_key(),
            paths.controller_key(),
        ] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let err = init(dir.path()).unwrap_err();
        assert!(err.to_string().contains("already initialised"), "{err}");
        // The CA loads again and signs.
        let ca = Ca::load(&paths).unwrap();
        let key = KeyPair::generate().unwrap();
        assert!(fleet_protocol::DeviceId::parse(CONTROLLER_IDENTITY).is_err());
        let pem = ca
            .sign(
                &leaf_params(
                    "BB-1",
                    vec![],
                    ExtendedKeyUsagePurpose::ClientAuth,
                    Duration::days(1),
                ),
                &key,
            )
            .unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn init_with_a_ca_made_elsewhere_keeps_it_and_checks_its_key() {
        let elsewhere = tempfile::tempdir().unwrap();
        let made = init(elsewhere.path()).unwrap();
        let cert = fs::read_to_string(made.ca_cert()).unwrap();
        let key = fs::read_to_string(made.ca_key()).unwrap();

        // Another key than the certificate's: refused, nothing written.
        let dir = tempfile::tempdir().unwrap();
        let other = KeyPair::generate().unwrap().serialize_pem();
        let opts = |ca| InitOptions {
            ca: Some(ca),
            server_names: vec![],
        };
        let err = init_with(dir.path(), &opts((cert.clone(), other))).unwrap_err();
        assert!(err.to_string().contains("not the certificate's"), "{err}");
        assert!(!PkiPaths::new(dir.path()).dir.exists());
        // A leaf (not a CA) with its own key: refused.
        let leaf = fs::read_to_string(made.broker_cert()).unwrap();
        let leaf_key = fs::read_to_string(made.broker_key()).unwrap();
        let err = init_with(dir.path(), &opts((leaf, leaf_key))).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");

        // The right pair: the directory's CA is that one, and it signs
        // certificates the original CA's certificate verifies.
        let paths = init_with(dir.path(), &opts((cert.clone(), key))).unwrap();
        assert_eq!(fs::read_to_string(paths.ca_cert()).unwrap(), cert);
        let broker = fs::read(paths.broker_cert()).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&broker).unwrap();
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
        let ca = ca_pem.parse_x509().unwrap();
        pem.parse_x509()
            .unwrap()
            .verify_signature(Some(ca.public_key()))
            .unwrap();
    }

    #[test]
    fn server_names_go_into_the_certificates_and_survive_renewal() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            ca: None,
            server_names: vec!["central.fleet".into(), "10.0.0.5".into()],
        };
        let paths = init_with(dir.path(), &opts).unwrap();
        assert_eq!(
            extra_server_names(&paths.broker_cert()),
            ["central.fleet", "10.0.0.5"]
        );
        assert_eq!(
            extra_server_names(&paths.api_cert()),
            ["central.fleet", "10.0.0.5"]
        );
        // Renewed past its renewal point: the same names.
        let (from, to, _) = validity(&paths.broker_cert()).unwrap();
        let late = crate::domain::renewal::due_at_ms(from, to, 0.66) + 1;
        let before = fs::read(paths.broker_cert()).unwrap();
        let renewed = renew_service_certs(&paths, &CertPolicy::default(), late).unwrap();
        assert!(renewed.contains(&CertKind::Broker), "{renewed:?}");
        assert_ne!(fs::read(paths.broker_cert()).unwrap(), before);
        assert_eq!(
            extra_server_names(&paths.broker_cert()),
            ["central.fleet", "10.0.0.5"]
        );

        // A bad name stops init before anything is written.
        let bad = tempfile::tempdir().unwrap();
        for name in ["", "-x", "a b", "x/y", "host."] {
            let opts = InitOptions {
                ca: None,
                server_names: vec![name.into()],
            };
            let err = init_with(bad.path(), &opts).unwrap_err();
            assert!(err.to_string().contains("server name"), "{name:?}: {err}");
            assert!(!PkiPaths::new(bad.path()).dir.exists(), "{name:?}");
        }
    }

    #[test]
    fn a_server_certificate_for_a_broker_set_up_elsewhere_names_its_host() {
        let dir = tempfile::tempdir().unwrap();
        let paths = init(dir.path()).unwrap();
        let (cert, key) = issue_server(
            &paths,
            "broker.mazandaran",
            &["mazandaran.fleet".into()],
            Duration::days(30),
        )
        .unwrap();
        let file = dir.path().join("server.crt");
        fs::write(&file, &cert).unwrap();
        assert_eq!(extra_server_names(&file), ["mazandaran.fleet"]);
        assert!(KeyPair::from_pem(&key).is_ok());
        assert!(issue_server(&paths, "x", &["bad name".into()], Duration::days(1)).is_err());
    }

    #[test]
    fn the_api_has_its_own_certificate_and_old_directories_get_one() {
        let dir = tempfile::tempdir().unwrap();
        let paths = PkiPaths::new(dir.path());
        init(dir.path()).unwrap();
        let api = fs::read(paths.api_cert()).unwrap();
        assert_ne!(api, fs::read(paths.broker_cert()).unwrap());
        assert_ne!(
            fs::read(paths.api_key()).unwrap(),
            fs::read(paths.broker_key()).unwrap()
        );
        assert!(!ensure_api_cert(&paths).unwrap(), "made a second one");
        // A directory from before: no api.crt, so one is made at start.
        fs::remove_file(paths.api_cert()).unwrap();
        fs::remove_file(paths.api_key()).unwrap();
        assert!(ensure_api_cert(&paths).unwrap());
        assert!(paths.api_cert().is_file() && paths.api_key().is_file());
    }

    #[test]
    fn service_certificates_are_renewed_past_their_renewal_point_only() {
        let dir = tempfile::tempdir().unwrap();
        let paths = init(dir.path()).unwrap();
        let policy = CertPolicy {
            server: Duration::minutes(2),
            ..CertPolicy::default()
        };
        let (from, to, serial) = validity(&paths.broker_cert()).unwrap();
        assert!(to - from > 700 * 86_400_000, "two years at init");
        // Well inside their life and the configured lifetime: nothing.
        assert!(
            renew_service_certs(&paths, &CertPolicy::default(), from + 86_400_000)
                .unwrap()
                .is_empty()
        );
        // Past two thirds: all three, with the same CA.
        let late = crate::domain::renewal::due_at_ms(from, to, 0.66) + 1;
        assert_eq!(
            renew_service_certs(&paths, &policy, late).unwrap(),
            CertKind::SERVICES
        );
        let (from2, to2, serial2) = validity(&paths.broker_cert()).unwrap();
        assert_ne!(serial, serial2);
        assert!(
            to2 - from2 <= 8 * 60_000,
            "the configured lifetime (+5 min back-dating)"
        );
        assert_eq!(
            validity(&paths.ca_cert()).unwrap().2,
            validity(&paths.ca_cert()).unwrap().2
        );
        let mode = fs::metadata(paths.broker_key())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}
