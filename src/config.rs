//! Configuration: every flag and environment variable of DESIGN §7, from one clap
//! definition, resolved into the values the server runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use url::Url;

use crate::policy::{Policy, Profile};

/// Parses sizes such as `256MiB`, `1MiB`, `5000`, `0`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("`{s}` is not a size (try 256MiB): {e}"))
}

/// Parses durations such as `30s`, `1500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration (try 30s): {e}"))
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Directory for the embedded store and pinned blobs.
    #[arg(long, env = "MEDIALINK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Store location: sqlite://PATH or postgres://... [default: sqlite://{data-dir}/medialink.db]
    #[arg(long, env = "MEDIALINK_STORE")]
    pub store: Option<String>,
    /// Fixed id key (64 hex digits) instead of the one kept in the store.
    #[arg(long, env = "MEDIALINK_ID_KEY", hide_env_values = true)]
    pub id_key: Option<String>,
}

impl StoreArgs {
    pub fn location(&self) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("medialink.db").display()))
    }

    pub fn id_key(&self) -> Result<Option<crate::ids::IdKey>, String> {
        self.id_key
            .as_deref()
            .map(|s| {
                crate::ids::IdKey::from_hex(s)
                    .ok_or_else(|| "--id-key must be 64 hex digits".to_owned())
            })
            .transpose()
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080, or 0.0.0.0:$PORT when PORT is set]
    #[arg(long, env = "MEDIALINK_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Base of the short URLs handed out [default: http://{listen}]
    #[arg(long, env = "MEDIALINK_PUBLIC_URL")]
    pub public_url: Option<Url>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Accepted API bearer token (repeatable; env: comma-separated).
    #[arg(
        long = "api-token",
        env = "MEDIALINK_API_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_tokens: Vec<String>,
    /// PEM certificate chain for HTTPS (with --tls-key); reloaded on SIGHUP.
    #[arg(long, env = "MEDIALINK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS (with --tls-cert).
    #[arg(long, env = "MEDIALINK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub limits: crate::api::limits::LimitArgs,
    /// Media policy: whatsapp or any.
    #[arg(long, env = "MEDIALINK_PROFILE", default_value = "whatsapp")]
    pub profile: Profile,
    /// Size limit of every media type under the `any` profile.
    #[arg(long, env = "MEDIALINK_ANY_MAX_BYTES", default_value = "32MiB", value_parser = parse_bytes)]
    pub any_max_bytes: u64,
    /// Bytes of verified media kept in memory (0 disables the cache).
    #[arg(long, env = "MEDIALINK_CACHE_BYTES", default_value = "256MiB", value_parser = parse_bytes)]
    pub cache_bytes: u64,
    /// Largest API request body.
    #[arg(long, env = "MEDIALINK_MAX_BODY", default_value = "1MiB", value_parser = parse_bytes)]
    pub max_body: u64,
    /// Whole upstream fetch, body included.
    #[arg(long, env = "MEDIALINK_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// Upstream TCP (and TLS) connect.
    #[arg(long, env = "MEDIALINK_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// DNS resolution when a link is created (a timeout counts as "does not resolve now").
    #[arg(long, env = "MEDIALINK_RESOLVE_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub resolve_timeout: Duration,
    /// Allow upstreams on loopback/private/link-local addresses (tests, intranets).
    #[arg(long, env = "MEDIALINK_ALLOW_PRIVATE_UPSTREAMS")]
    pub allow_private_upstreams: bool,
    /// Allow upstreams in this range only (repeatable; env: comma-separated).
    #[arg(
        long = "allow-upstream-cidr",
        env = "MEDIALINK_ALLOW_UPSTREAM_CIDRS",
        value_delimiter = ','
    )]
    pub allow_upstream_cidrs: Vec<IpNet>,
    /// Log format: text or json (filter with RUST_LOG).
    #[arg(long, env = "MEDIALINK_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Serve /metrics on this address instead of the main listener.
    #[arg(long, env = "MEDIALINK_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// How often expired links (and the blobs only they pin) are deleted.
    #[arg(long, env = "MEDIALINK_SWEEP_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "MEDIALINK_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

impl ServeArgs {
    /// The listen address: the flag or env, else `PORT` (as hosting platforms set
    /// it, meaning every interface), else loopback 8080.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        if let Some(a) = self.listen {
            return Ok(a);
        }
        match std::env::var("PORT") {
            Ok(p) => p
                .trim()
                .parse::<u16>()
                .map(|port| SocketAddr::from(([0, 0, 0, 0], port)))
                .map_err(|_| format!("PORT=`{p}` is not a port number")),
            Err(_) => Ok(SocketAddr::from(([127, 0, 0, 1], 8080))),
        }
    }

    /// Why the short URLs would reach nobody, when they would not: without
    /// `--public-url` they start with the listen address, and a wildcard one (as in the
    /// container image, `0.0.0.0:8080`) names no host a gateway or phone can fetch from.
    pub fn public_base_warning(&self, bound: SocketAddr) -> Option<String> {
        (self.public_url.is_none() && bound.ip().is_unspecified()).then(|| {
            format!(
                "short URLs will start with {}, which no gateway or phone can fetch: \
                 set --public-url (MEDIALINK_PUBLIC_URL) to this server's public address",
                self.public_base(bound)
            )
        })
    }

    /// The media policy these flags ask for (`--profile`, `--any-max-bytes`).
    pub fn policy(&self) -> Policy {
        Policy {
            profile: self.profile,
            any_max_bytes: self.any_max_bytes,
        }
    }

    /// Short URLs start with this (no trailing slash).
    pub fn public_base(&self, bound: SocketAddr) -> String {
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        match &self.public_url {
            Some(u) => u.as_str().trim_end_matches('/').to_owned(),
            None => format!("{scheme}://{bound}"),
        }
    }
}

/// The messaging gateway (ChatFlow) that `send` delivers through (DESIGN §7, §8).
#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Gateway API base.
    #[arg(
        long = "chatflow-base-url",
        env = "CHATFLOW_BASE_URL",
        default_value = "https://app.chatflow.kz/api/v1"
    )]
    pub chatflow_base_url: Url,
    /// Gateway API token.
    #[arg(
        long = "chatflow-token",
        env = "CHATFLOW_TOKEN",
        hide_env_values = true
    )]
    pub chatflow_token: Option<String>,
    /// WhatsApp instance id at the gateway.
    #[arg(long = "chatflow-instance-id", env = "CHATFLOW_INSTANCE_ID")]
    pub chatflow_instance_id: Option<String>,
    /// How long one gateway call may take (it downloads and uploads the media first).
    #[arg(long = "gateway-timeout", env = "CHATFLOW_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub gateway_timeout: Duration,
}

impl GatewayArgs {
    /// The gateway client, or `None` when no token/instance is configured.
    pub fn gateway(&self) -> Result<Option<crate::sender::Gateway>, String> {
        let (Some(token), Some(instance)) = (&self.chatflow_token, &self.chatflow_instance_id)
        else {
            return Ok(None);
        };
        let mut cfg = crate::sender::GatewayConfig::new(
            self.chatflow_base_url.clone(),
            token.clone(),
            instance.clone(),
        );
        cfg.timeout = self.gateway_timeout;
        crate::sender::Gateway::new(cfg)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    /// `medialink serve ARGS`, parsed as the binary parses it.
    fn serve_args(args: &[&str]) -> ServeArgs {
        let argv = ["medialink", "serve"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv).expect("arguments parse").command {
            Command::Serve(serve) => *serve,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn a_wildcard_listen_address_without_a_public_url_is_warned_about() {
        let any4: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let any6: SocketAddr = "[::]:8080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let bare = serve_args(&[]);
        let warning = bare
            .public_base_warning(any4)
            .expect("a warning for 0.0.0.0");
        assert!(warning.contains("http://0.0.0.0:8080"), "{warning}");
        assert!(warning.contains("--public-url"), "{warning}");
        assert!(
            bare.public_base_warning(any6).is_some(),
            "a warning for [::]"
        );
        // A loopback or named address is what the operator asked for: no warning.
        assert_eq!(bare.public_base_warning(local), None);
        let public = serve_args(&["--public-url", "https://media.example.com"]);
        assert_eq!(public.public_base_warning(any4), None);
        assert_eq!(public.public_base(any4), "https://media.example.com");
    }
}
