//! A throwaway certificate authority, made at start by `concord cluster --tls` (and by tests), so
//! the secure set-up is as easy to try as the plain one. Production clusters use their own CA
//! (the README shows the steps); nothing here is meant to outlive a local cluster.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::TlsError;

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A CA that signs node certificates.
pub struct LocalCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn err(e: rcgen::Error) -> TlsError {
    TlsError::Config(format!("making a certificate: {e}"))
}

/// Validity of a node certificate.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// rcgen's defaults: from 1975 to 4096.
    Lasting,
    /// Expired at the end of 2020 (for tests).
    Expired,
}

impl LocalCa {
    pub fn new(name: &str) -> Result<LocalCa, TlsError> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(err)?;
        let cert_pem = p.self_signed(&key).map_err(err)?.pem();
        Ok(LocalCa {
            cert_pem,
            issuer: Issuer::new(p, key),
        })
    }

    /// A certificate for a node reachable at `names` (host names and IP addresses), good both as
    /// a server certificate and as the node's client certificate towards its peers.
    pub fn node(&self, cn: &str, names: &[&str], validity: Validity) -> Result<Pem, TlsError> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut p = CertificateParams::new(names).map_err(err)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        if let Validity::Expired = validity {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let key = KeyPair::generate().map_err(err)?;
        let cert = p.signed_by(&key, &self.issuer).map_err(err)?.pem();
        Ok(Pem {
            cert,
            key: key.serialize_pem(),
        })
    }
}

/// Where [`write_node`] put a node's files.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `pem` as `<dir>/<name>.pem` and `<dir>/<name>.key` (the key readable by its owner
/// only).
pub fn write_node(dir: &Path, name: &str, pem: &Pem) -> std::io::Result<NodeFiles> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &pem.cert)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key)?;
    f.write_all(pem.key.as_bytes())?;
    f.sync_all()?;
    Ok(NodeFiles { cert, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificates_make_a_server_configuration_with_client_verification() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::new("test CA").unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca.cert_pem).unwrap();
        let pem = ca
            .node("node-0", &["localhost", "127.0.0.1"], Validity::Lasting)
            .unwrap();
        let f = write_node(dir.path(), "node-0", &pem).unwrap();
        let files = crate::tls::TlsFiles {
            cert: f.cert.clone(),
            key: f.key.clone(),
            client_ca: Some(ca_path),
            peer_ca: None,
        };
        let config = crate::tls::server_config(&files).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");

        // A key that does not belong to the certificate is refused (a half-done rotation).
        let other = ca
            .node("node-1", &["localhost"], Validity::Lasting)
            .unwrap();
        std::fs::write(&f.key, &other.key).unwrap();
        assert!(crate::tls::server_config(&files).is_err());
        std::fs::write(&f.key, "not a key").unwrap();
        let e = crate::tls::server_config(&files).unwrap_err().to_string();
        assert!(e.contains("key"), "{e}");
    }
}
