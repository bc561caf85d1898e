//! A lean client for the API Gateway Management API (`PostToConnection`, `GetConnection`,
//! `DeleteConnection`): what `aws-sdk-apigatewaymanagement` sends and how it reads the answers,
//! at about the CPU cost of a plain HTTP POST. Modules, in reading order:
//!
//! - [`credentials`]: [`CredentialsSource`], the default AWS provider chain (or fixed keys) behind a
//!   refresh-before-expiry cache, and [`SigningCredentials`], one validated snapshot.
//! - [`signer`]: SigV4 for `execute-api` with the derived key cached per day, region and secret,
//!   byte-identical to `aws-sigv4`; and [`signer::Verifier`], which checks a received request's
//!   signature (for the local emulator and tests).
//! - [`error`]: [`MgmtError`] and [`error::classify`], the SDK's reading of an error response.
//! - [`client`]: [`MgmtClient`] and [`Endpoint`], the pooled hyper/rustls client that puts them
//!   together.

pub mod client;
pub mod credentials;
pub mod error;
pub mod signer;

pub use client::{ClientOptions, ConnectionInfo, Endpoint, EndpointError, MgmtClient, TlsRoots};
pub use credentials::{CredentialsError, CredentialsSource, SigningCredentials};
pub use error::MgmtError;
pub use signer::{Signer, Verifier, VerifyError};
