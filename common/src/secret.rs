//! Secrets from configuration (gateway secrets, API keys): a type whose `Debug` and `Display` never print
//! the value, and a set of accepted values checked in constant time, so that old and new values can be
//! accepted side by side while a secret is rotated.

use std::fmt;
use subtle::ConstantTimeEq;

/// A secret string. Prints as `Secret(***)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the rare places that must send it (an HTTP header to the integration).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Every accepted value of one secret. Empty means "not configured".
#[derive(Clone, Debug, Default)]
pub struct SecretSet(Vec<Secret>);

impl SecretSet {
    pub fn new(values: Vec<Secret>) -> Self {
        Self(values)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `candidate` equals one of the accepted values. Every value is compared, each in
    /// constant time, so the time taken says nothing about which value (or how much of it) matched.
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        let mut found = subtle::Choice::from(0u8);
        for secret in &self.0 {
            found |= secret.0.as_bytes().ct_eq(candidate);
        }
        found.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let s = Secret::new("hunter2-hunter2-hunter2-hunter2-x");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let set = SecretSet::new(vec![s]);
        assert!(!format!("{set:?}").contains("hunter2"));
    }

    #[test]
    fn accepts_any_configured_value() {
        let set = SecretSet::new(vec![Secret::new("old-value"), Secret::new("new-value")]);
        assert!(set.accepts(b"old-value"));
        assert!(set.accepts(b"new-value"));
        assert!(!set.accepts(b"new-valu"));
        assert!(!set.accepts(b""));
        assert!(!SecretSet::default().accepts(b""));
    }
}
