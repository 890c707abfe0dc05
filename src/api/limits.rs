//! Rate limits on the API (`governor` keyed quotas): requests per valid token, and
//! failed authentications per client address. `/m/`, `/healthz` and `/readyz` are not
//! limited here: the gateway's fetches must never be refused for volume.
//!
//! Failed-auth policy: every API call that fails authentication (no token, wrong
//! token) spends one unit of its client address's failure budget (default 10 a
//! minute, burst 20). The call that finds the budget spent gets `429 rate_limited`
//! instead of 401, and from then on *every* API call from that address, even one with
//! a valid token, gets 429 with `Retry-After` until the budget holds one unit again.
//! An address that keeps guessing is held to the budget's rate; a token guessed under
//! that budget is out of reach anyway (tokens are compared as SHA-256 digests). IPv6
//! clients are keyed by their /64, since one host usually owns a whole /64.
//!
//! State stays bounded: [`Limits::sweep`] (run every minute by the server) drops keys
//! whose quota has fully refilled and blocks that have ended.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::api::problem::{Code, Problem};

/// The limits on hostile or runaway clients (DESIGN §7 style: flag, env, default).
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Connections served at once; further ones wait in the listen backlog.
    #[arg(long, env = "MEDIALINK_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// API requests per second per token (0: no limit).
    #[arg(long, env = "MEDIALINK_API_RATE", default_value_t = 100)]
    pub api_rate: u32,
    /// API requests a token may make at once above its rate.
    #[arg(long, env = "MEDIALINK_API_BURST", default_value_t = 200)]
    pub api_burst: u32,
    /// Failed API authentications per minute per client address (0: no limit).
    #[arg(long, env = "MEDIALINK_AUTH_FAILURE_RATE", default_value_t = 10)]
    pub auth_failure_rate: u32,
    /// Failed authentications a client address may make at once before it is blocked.
    #[arg(long, env = "MEDIALINK_AUTH_FAILURE_BURST", default_value_t = 20)]
    pub auth_failure_burst: u32,
}

/// How often the server calls [`Limits::sweep`].
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The API's rate limiters, shared by every request (cheap to clone).
#[derive(Clone, Default)]
pub struct Limits(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// Keyed by the token's SHA-256 digest: only valid tokens reach it, so its keys
    /// are the configured tokens.
    per_token: Option<DefaultKeyedRateLimiter<[u8; 32]>>,
    failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Client keys whose failure budget is spent, and until when.
    blocked: DashMap<IpAddr, Instant>,
}

fn quota(rate: u32, burst: u32, per: fn(NonZeroU32) -> Quota) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    Some(per(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate)))
}

impl Limits {
    pub fn new(args: &LimitArgs) -> Self {
        Self(Arc::new(Inner {
            per_token: quota(args.api_rate, args.api_burst, Quota::per_second)
                .map(RateLimiter::keyed),
            failures: quota(
                args.auth_failure_rate,
                args.auth_failure_burst,
                Quota::per_minute,
            )
            .map(RateLimiter::keyed),
            blocked: DashMap::new(),
        }))
    }

    /// 429 while `client`'s failure budget is spent. `None` (no peer address, as in
    /// in-process tests) is never blocked.
    pub fn check_blocked(&self, client: Option<IpAddr>) -> Result<(), Problem> {
        let Some(key) = client.map(client_key) else {
            return Ok(());
        };
        let until = self.0.blocked.get(&key).map(|u| *u);
        match until {
            Some(until) if until > Instant::now() => Err(blocked(until - Instant::now())),
            Some(_) => {
                self.0.blocked.remove(&key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records a failed authentication from `client`; returns the 429 to answer
    /// instead of 401 when this failure found the budget spent.
    pub fn auth_failed(&self, client: Option<IpAddr>) -> Option<Problem> {
        let (Some(limiter), Some(key)) = (&self.0.failures, client.map(client_key)) else {
            return None;
        };
        let not_until = limiter.check_key(&key).err()?;
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        self.0.blocked.insert(key, Instant::now() + wait);
        tracing::warn!(client = %key, retry_after_ms = wait.as_millis() as u64, "too many failed API authentications: client blocked");
        Some(blocked(wait))
    }

    /// Spends one request of the token's quota, or says how long to wait.
    pub fn check_token(&self, token_digest: &[u8; 32]) -> Result<(), Problem> {
        let Some(limiter) = &self.0.per_token else {
            return Ok(());
        };
        limiter.check_key(token_digest).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Problem::new(
                Code::RateLimited,
                "this token is over its request rate (--api-rate); retry after the time in Retry-After",
            )
            .with_retry_after(retry_secs(wait))
        })
    }

    /// Forgets keys whose quotas have refilled and blocks that have ended.
    pub fn sweep(&self) {
        if let Some(limiter) = &self.0.failures {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.0.per_token {
            limiter.retain_recent();
        }
        let now = Instant::now();
        self.0.blocked.retain(|_, until| *until > now);
        self.0.blocked.shrink_to_fit();
    }

    /// Keys held now (for tests: the state must shrink back after a flood).
    pub fn tracked(&self) -> usize {
        self.0.failures.as_ref().map_or(0, |l| l.len())
            + self.0.per_token.as_ref().map_or(0, |l| l.len())
            + self.0.blocked.len()
    }
}

/// Sweeps `limits` every [`SWEEP_EVERY`], until the task is aborted.
pub async fn sweep_periodically(limits: Limits) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        limits.sweep();
    }
}

/// The key a client address is limited under: IPv4 as is (IPv4-mapped IPv6 too),
/// IPv6 by its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

fn blocked(wait: Duration) -> Problem {
    Problem::new(
        Code::RateLimited,
        "too many failed authentications from this address; every API call from it is refused until the time in Retry-After has passed",
    )
    .with_retry_after(retry_secs(wait))
}

/// Whole seconds, rounded up and at least 1 (`Retry-After: 0` invites a hot loop).
fn retry_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(api_rate: u32, api_burst: u32, fail_rate: u32, fail_burst: u32) -> LimitArgs {
        LimitArgs {
            max_connections: 10,
            api_rate,
            api_burst,
            auth_failure_rate: fail_rate,
            auth_failure_burst: fail_burst,
        }
    }

    #[test]
    fn failures_past_the_burst_block_the_address_and_only_it() {
        let limits = Limits::new(&args(100, 200, 10, 3));
        let a = Some(IpAddr::from([127, 0, 0, 1]));
        let b = Some(IpAddr::from([127, 0, 0, 2]));
        for _ in 0..3 {
            assert!(limits.check_blocked(a).is_ok());
            assert!(limits.auth_failed(a).is_none());
        }
        let p = limits
            .auth_failed(a)
            .expect("fourth failure is over the burst");
        assert_eq!(p.code, Code::RateLimited);
        // 10 a minute: one unit back after 6 s.
        assert!(matches!(p.retry_after, Some(1..=6)), "{:?}", p.retry_after);
        let p = limits.check_blocked(a).unwrap_err();
        assert_eq!(p.status.as_u16(), 429);
        assert!(limits.check_blocked(b).is_ok());
        assert!(limits.check_blocked(None).is_ok());
        assert!(limits.auth_failed(None).is_none());
    }

    #[test]
    fn token_quota_refuses_past_the_burst_with_retry_after() {
        let limits = Limits::new(&args(1, 2, 10, 20));
        let t = [7u8; 32];
        assert!(limits.check_token(&t).is_ok());
        assert!(limits.check_token(&t).is_ok());
        let p = limits.check_token(&t).unwrap_err();
        assert_eq!((p.code, p.retry_after), (Code::RateLimited, Some(1)));
        assert!(
            limits.check_token(&[8u8; 32]).is_ok(),
            "other tokens unaffected"
        );
    }

    #[test]
    fn zero_rates_disable_the_limits() {
        let limits = Limits::new(&args(0, 0, 0, 0));
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..1000 {
            assert!(limits.check_token(&[1u8; 32]).is_ok());
            assert!(limits.auth_failed(a).is_none());
        }
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn ipv6_clients_share_their_slash_64_and_mapped_v4_is_v4() {
        let k = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::2"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
    }

    #[test]
    fn sweep_forgets_refilled_keys() {
        let limits = Limits::new(&args(1000, 1000, 60_000, 1000));
        for i in 0..100u8 {
            let _ = limits.auth_failed(Some(IpAddr::from([10, 0, 0, i])));
        }
        assert!(limits.tracked() >= 100);
        std::thread::sleep(Duration::from_millis(50));
        limits.sweep();
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_millis(5001)), 6);
        assert_eq!(retry_secs(Duration::from_secs(6)), 6);
    }
}
