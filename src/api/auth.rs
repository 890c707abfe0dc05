//! Bearer-token authentication for the API. Several tokens may be valid at once (for
//! rotation); they are compared in constant time, through their SHA-256 digests so
//! that neither content nor length leaks through timing.

use axum::extract::FromRequestParts;
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
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Walk every token whatever matches, so the position of a match is not timed.
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(&digest))
            .into()
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
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        match presented {
            Some(t) if state.tokens.accepts(t.trim()) => Ok(Authorized),
            Some(_) => Err(Problem::new(
                Code::Unauthorized,
                "the bearer token is not valid",
            )),
            None => Err(Problem::new(
                Code::Unauthorized,
                "send `Authorization: Bearer <token>`",
            )),
        }
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
