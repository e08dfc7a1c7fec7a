//! Certificates made in the test: a CA, and leaf certificates it (or another CA) signs.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, SanType,
};
use time::{Duration, OffsetDateTime};

/// A certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A leaf certificate.
pub struct Leaf {
    /// PEM.
    pub pem: String,
    /// DER.
    pub der: Vec<u8>,
}

/// What a leaf says.
pub struct LeafSpec<'a> {
    pub cn: Option<&'a str>,
    pub org: Option<&'a str>,
    pub ou: Option<&'a str>,
    pub uri: Option<&'a str>,
    /// Seconds from now; negative is the past.
    pub not_before: i64,
    pub not_after: i64,
}

impl Default for LeafSpec<'_> {
    fn default() -> Self {
        Self {
            cn: Some("orders-service"),
            org: Some("Example Org"),
            ou: None,
            uri: None,
            not_before: -3600,
            not_after: 86_400,
        }
    }
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("CA cert").pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A client certificate for `spec`, signed by this CA.
    pub fn issue(&self, spec: LeafSpec<'_>) -> Leaf {
        self.issue_with_names(spec, &[])
    }

    /// The same with DNS SANs (for a server certificate).
    pub fn issue_with_names(&self, spec: LeafSpec<'_>, dns: &[&str]) -> Leaf {
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = spec.cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        if let Some(org) = spec.org {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org);
        }
        if let Some(ou) = spec.ou {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, ou);
        }
        if let Some(uri) = spec.uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().expect("URI SAN")));
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now + Duration::seconds(spec.not_before);
        params.not_after = now + Duration::seconds(spec.not_after);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            pem: cert.pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A leaf and its private key, PEM (for a TLS endpoint).
    pub fn issue_with_key(&self, cn: &str, dns: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example Org");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

/// URL-encodes PEM the way Envoy and AWS ALB put it in a header.
pub fn url_encode(pem: &str) -> String {
    percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}
