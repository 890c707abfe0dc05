//! The sender (DESIGN §9): delivers media to a lead through the ChatFlow gateway.
//!
//! - [`jid`]: a typed phone number / jid, parsed once.
//! - [`gateway`]: one GET per message, every parameter percent-encoded, the answer
//!   parsed and logged (never the token). No retries here.
//! - [`deliver`]: validation, shortening, retries and the optional text fallback.
//! - [`outcome`]: the [`Outcome`] the CLI and API print, and the classification of
//!   a failed gateway call ([`Failure`]).
//!
//! It does not make short links itself: a [`Shortener`] does (medialink's link service
//! in the server, its HTTP API in the CLI).

pub mod deliver;
pub mod gateway;
pub mod jid;
pub mod outcome;

pub use deliver::{
    MediaKind, RetryPolicy, SendError, SendRequest, ShortenError, Shortener, deliver, deliver_with,
};
pub use gateway::{Gateway, GatewayAnswer, GatewayConfig, GatewayError};
pub use jid::{Jid, JidError, normalize};
pub use outcome::{DeliveredAs, Failure, GatewaySummary, Outcome, OutcomeError, classify};
