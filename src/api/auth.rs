//! Bearer-token authentication for the API. Several tokens may be valid at once (for
//! rotation); they are compared in constant time, through their SHA-256 digests so
//! that neither content nor length leaks through timing. Every authenticated call
//! also passes the rate limits of [`crate::api::limits`] (per token, and per client
//! address for failed attempts).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::problem::{Code, Problem};
use crate::state::SharedState;

/// The set of accepted tokens, kept only as digests.
#[derive(Clone, Default)]
pub struct Tokens(Vec<[u8; 32]>);

impl Tokens {
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            tokens
                .into_iter()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| Sha256::digest(t.as_bytes()).into())
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn accepts(&self, presented: &str) -> bool {
        self.matching(presented).is_some()
    }

    /// The digest of `presented` when it is one of the tokens (the rate-limit key).
    pub fn matching(&self, presented: &str) -> Option<[u8; 32]> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Walk every token whatever matches, so the position of a match is not timed.
        let found: bool = self
            .0
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(&digest))
            .into();
        found.then_some(digest)
    }
}

/// Extractor: the request carried a valid bearer token.
pub struct Authorized;

impl FromRequestParts<SharedState> for Authorized {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Problem> {
        if state.tokens.is_empty() {
            return Err(Problem::new(
                Code::Unauthorized,
                "this server has no API token configured (--api-token or MEDIALINK_API_TOKENS), so the API refuses every call",
            ));
        }
        // server.rs puts the peer address on every request it accepts.
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip());
        state.limits.check_blocked(client)?;
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        let refusal = match presented.map(|t| state.tokens.matching(t.trim())) {
            Some(Some(digest)) => {
                state.limits.check_token(&digest)?;
                return Ok(Authorized);
            }
            Some(None) => Problem::new(Code::Unauthorized, "the bearer token is not valid"),
            None => Problem::new(Code::Unauthorized, "send `Authorization: Bearer <token>`"),
        };
        Err(state.limits.auth_failed(client).unwrap_or(refusal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_any_configured_token_and_nothing_else() {
        let t = Tokens::new(["alpha", " beta ", ""]);
        assert!(t.accepts("alpha"));
        assert!(t.accepts("beta"));
        assert!(!t.accepts(""));
        assert!(!t.accepts("alph"));
        assert!(!t.accepts("alphaa"));
        assert!(Tokens::new([""]).is_empty());
    }
}
