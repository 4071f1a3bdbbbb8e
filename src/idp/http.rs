//! The HTTP client for talking to IdPs (discovery, JWKS, token endpoint): the tree's one
//! reqwest, redirects off (an IdP endpoint that redirects is misconfigured, and
//! following it would leak the code or secret elsewhere), bounded time per request.

use super::IdpError;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the client every [`super::Provider`] of the process can share.
pub fn http_client() -> Result<reqwest::Client, IdpError> {
    // reqwest is built without a crypto-provider feature and takes the process default:
    // install aws-lc-rs, the same provider `crate::tls::provider()` installs (whichever
    // runs first wins; both install the same one).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| IdpError::Setup(e.to_string()))
}
