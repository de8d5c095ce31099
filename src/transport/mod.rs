//! Websocket transport to TradingView (or the simulator): TCP or rustls, the upgrade headers
//! real clients need, and failures that name the phase and the host.
//!
//! - `blocking` serves the historical client: one connection per call, every read and write
//!   bounded by the call's one deadline, however the server trickles.
//! - `nonblocking` serves the live engine: tungstenite over a `mio` socket (plain or rustls),
//!   connect, TLS and upgrade resumed on readiness, reads drained until `WouldBlock`, writes
//!   buffered with a bound and flushed when the socket is writable.
//! - `handshake` holds what both share: the upgrade request, the websocket limits and the
//!   cached rustls configuration.
//!
//! This module is the only owner of sockets, rustls connections and tungstenite state; no type
//! of theirs appears in the crate's public API.

mod blocking;
mod error;
mod handshake;
pub(crate) mod nonblocking;
mod stream;
mod url;

pub(crate) use blocking::Connection;
pub use error::{Cause, Closed, IoSource, TransportError};
pub use handshake::{ORIGIN, USER_AGENT};
pub(crate) use stream::{MaybeTls, TlsStream};
pub use url::{Endpoint, EndpointError};

/// How to reach the server: endpoint, TLS trust and websocket limits. By-value setters; every
/// default is documented.
#[derive(Clone)]
#[non_exhaustive]
pub struct TransportConfig {
    /// Where to connect. Default [`Endpoint::data`].
    pub endpoint: Endpoint,
    /// Extra trusted root certificates (DER), e.g. the simulator's. Default none.
    pub extra_roots: Vec<Vec<u8>>,
    /// Trust the Mozilla roots of `webpki-roots`. Default `true`.
    pub webpki_roots: bool,
    /// Largest websocket message accepted. Default 8 MiB (a 20,000-bar load is about 2 MB).
    pub max_message_size: usize,
    /// Most bytes queued for sending before a write fails with
    /// [`TransportError::Backpressure`] (the server is not reading). Default 1 MiB.
    pub max_write_buffer: usize,
    /// The rustls configuration, built once per set of roots and shared by clones.
    tls: handshake::TlsCache,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            endpoint: Endpoint::data(),
            extra_roots: Vec::new(),
            webpki_roots: true,
            max_message_size: 8 << 20,
            max_write_buffer: 1 << 20,
            tls: handshake::TlsCache::default(),
        }
    }
}

impl std::fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportConfig")
            .field("endpoint", &self.endpoint)
            .field("extra_roots", &self.extra_roots.len())
            .field("webpki_roots", &self.webpki_roots)
            .field("max_message_size", &self.max_message_size)
            .field("max_write_buffer", &self.max_write_buffer)
            .finish()
    }
}

impl TransportConfig {
    /// Sets the endpoint.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Trusts one more root certificate (DER).
    #[must_use]
    pub fn with_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.extra_roots.push(der.into());
        self
    }

    /// Trusts every certificate of a PEM bundle (`-----BEGIN CERTIFICATE-----` blocks), e.g.
    /// the file `tvdatafeed sim --tls --cert-out FILE` writes.
    ///
    /// # Errors
    ///
    /// [`TransportError::InvalidConfig`] when the text holds no certificate or a malformed
    /// one.
    pub fn with_root_certificates_pem(mut self, pem: &str) -> Result<Self, TransportError> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert
                .map_err(|e| TransportError::InvalidConfig(format!("bad PEM certificate: {e}")))?;
            self.extra_roots.push(cert.to_vec());
            n += 1;
        }
        if n == 0 {
            return Err(TransportError::InvalidConfig(
                "no certificate in the PEM text".into(),
            ));
        }
        Ok(self)
    }

    /// Sets the largest websocket message accepted.
    #[must_use]
    pub fn with_max_message_size(mut self, n: usize) -> Self {
        self.max_message_size = n;
        self
    }

    /// Sets the write-buffer bound (at least 64 KiB).
    #[must_use]
    pub fn with_max_write_buffer(mut self, n: usize) -> Self {
        self.max_write_buffer = n.max(64 << 10);
        self
    }

    /// The rustls client configuration for these roots (cached).
    pub(crate) fn rustls(
        &self,
    ) -> Result<crate::sync::plain::Arc<rustls::ClientConfig>, TransportError> {
        self.tls.get(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::plain::Arc;

    #[test]
    fn rustls_config_is_built_once_per_roots() {
        let cfg = TransportConfig::default().with_root_certificate(Vec::<u8>::new());
        // An empty DER is rejected: the error names the certificate, nothing is cached.
        assert!(cfg.rustls().is_err());
        let cfg = TransportConfig::default();
        let a = cfg.rustls().expect("webpki roots");
        let b = cfg.clone().rustls().expect("webpki roots");
        assert!(Arc::ptr_eq(&a, &b), "a clone reuses the cached config");
        assert!(cfg.tls.same(&cfg.clone().tls));
        let mut other = cfg.clone();
        other.webpki_roots = false;
        let c = other.rustls().expect("no roots is valid");
        assert!(!Arc::ptr_eq(&a, &c), "changed roots rebuild the config");
    }
}
