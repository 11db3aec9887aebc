//! TLS settings for `amqps://`: the system trust store plus an optional PEM CA bundle.
//!
//! rustls with the *ring* provider; roots come from the operating system (rustls-native-certs)
//! and from `ca_file`, which is how the local stack's self-signed CA is trusted.

use lapin::tcp::OwnedTLSConfig;

use crate::error::{CoreError, Result};

/// Read a PEM CA bundle; errors name the file and say what is expected.
pub fn load_ca_file(path: &str) -> Result<String> {
    let pem = std::fs::read_to_string(path).map_err(|e| {
        CoreError::Connection(format!(
            "cannot read ca_file {path:?}: {e}; pass the path of a PEM CA bundle"
        ))
    })?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(CoreError::Connection(format!(
            "ca_file {path:?} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")"
        )));
    }
    Ok(pem)
}

pub fn tls_config(ca_pem: Option<&str>) -> OwnedTLSConfig {
    OwnedTLSConfig {
        identity: None,
        cert_chain: ca_pem.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_non_pem_files_are_clear_errors() {
        let err = load_ca_file("/nonexistent/ca.pem").unwrap_err();
        assert!(err.to_string().contains("cannot read ca_file"), "{err}");
        let dir = std::env::temp_dir().join(format!("volley-core-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-pem.txt");
        std::fs::write(&path, "hello").unwrap();
        let err = load_ca_file(path.to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
