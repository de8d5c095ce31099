//! The auth token every TradingView connection sends first, shared by the protocol, the
//! historical client, the live engine, sign-in and the CLI.
//!
//! A token is a credential: it never appears in `Debug` output, logs or errors.
#![forbid(unsafe_code)]

use std::fmt;

/// The token anonymous connections send (`set_auth_token ["unauthorized_user_token"]`).
pub const ANONYMOUS_TOKEN: &str = "unauthorized_user_token";

/// An authentication token: a JWT from sign-in (or a browser's `window.user.auth_token`), or
/// the anonymous token. Its `Debug` never shows it.
///
/// # Examples
///
/// ```
/// use tvdatafeed::AuthToken;
///
/// let token = AuthToken::new("eyJhbGciOiJSUzUxMiJ9.payload.signature");
/// assert_eq!(format!("{token:?}"), "AuthToken(<redacted>)");
/// assert!(AuthToken::anonymous().is_anonymous());
/// assert_eq!(AuthToken::default(), AuthToken::anonymous());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl AuthToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The anonymous token.
    pub fn anonymous() -> Self {
        Self(ANONYMOUS_TOKEN.to_owned())
    }

    /// Whether this is the anonymous token.
    pub fn is_anonymous(&self) -> bool {
        self.0 == ANONYMOUS_TOKEN
    }

    /// The token text, to be sent to the server and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Default for AuthToken {
    /// The anonymous token.
    fn default() -> Self {
        Self::anonymous()
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_anonymous() {
            f.write_str("AuthToken(anonymous)")
        } else {
            f.write_str("AuthToken(<redacted>)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let t = AuthToken::new("eyJhbGciOiJSUzUxMiJ9.secret.sig");
        assert_eq!(format!("{t:?}"), "AuthToken(<redacted>)");
        assert_eq!(
            format!("{:?}", AuthToken::anonymous()),
            "AuthToken(anonymous)"
        );
    }
}
