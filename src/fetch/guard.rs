//! The SSRF guard (DESIGN §5): which upstream addresses medialink refuses to connect
//! to, and why.
//!
//! Owns: the one table of refused ranges ([`REFUSED`]) with a reason per row, the
//! reading of IPv4 addresses embedded in IPv6 ([`EMBEDS_V4`]), the operator's lifts
//! (`--allow-private-upstreams`, `--allow-upstream-cidr`), the check of a URL's
//! literal host, and [`GuardResolver`], the connector's resolver that refuses a whole DNS
//! answer when any address in it is refused.
//!
//! Deliberately does not: open connections, follow redirects or judge bytes. The
//! fetcher (`super`) wires this guard into every place where its client may pick an
//! address; `policy` decides whether fetched bytes are acceptable.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    // `new_assert` is evaluated at compile time for the const table below, so a bad
    // prefix length fails the build instead of panicking at run time.
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len))
}

const fn v6(s: [u16; 8], len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    ))
}

/// Every refused range with its reason. First match wins, so narrow rows (cloud
/// metadata, broadcast) sit before the wide rows that contain them: the reason then
/// names the sharper danger. IPv4 embedded in IPv6 is not listed here; see
/// [`EMBEDS_V4`].
pub const REFUSED: &[(IpNet, &str)] = &[
    // Cloud metadata: the classic SSRF prize (credentials of the host's role).
    (
        v4(169, 254, 169, 254, 32),
        "cloud metadata (AWS, GCP, Azure, OpenStack)",
    ),
    (v4(100, 100, 100, 200, 32), "cloud metadata (Alibaba Cloud)"),
    (
        v6([0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254], 128),
        "cloud metadata (AWS IPv6)",
    ),
    // IPv4 special-purpose registry (RFC 6890 and successors).
    (
        v4(0, 0, 0, 0, 8),
        "unspecified / \"this network\" (0.0.0.0/8)",
    ),
    (v4(10, 0, 0, 0, 8), "private (RFC 1918)"),
    (v4(100, 64, 0, 0, 10), "carrier-grade NAT (RFC 6598)"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local"),
    (v4(172, 16, 0, 0, 12), "private (RFC 1918)"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignments (RFC 6890)"),
    (v4(192, 0, 2, 0, 24), "documentation (TEST-NET-1)"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast (RFC 7526)"),
    (v4(192, 168, 0, 0, 16), "private (RFC 1918)"),
    (v4(198, 18, 0, 0, 15), "benchmarking (RFC 2544)"),
    (v4(198, 51, 100, 0, 24), "documentation (TEST-NET-2)"),
    (v4(203, 0, 113, 0, 24), "documentation (TEST-NET-3)"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(255, 255, 255, 255, 32), "broadcast"),
    (v4(240, 0, 0, 0, 4), "reserved (240.0.0.0/4)"),
    // IPv6 special-purpose registry.
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified (::)"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback (::1)"),
    // Translators reach whatever IPv4 they embed, internal ones included, and the
    // translator (not us) picks the route: refuse the whole prefix.
    (
        v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
        "NAT64 well-known prefix (RFC 6052)",
    ),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "NAT64 local-use prefix (RFC 8215)",
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        "discard-only (RFC 6666)",
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
        "Teredo tunnel (RFC 4380)",
    ),
    (
        v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48),
        "benchmarking (RFC 5180)",
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        "IETF protocol assignments (RFC 2928)",
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "documentation (RFC 3849)",
    ),
    (
        v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
        "6to4 tunnel (RFC 3056)",
    ),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        "documentation (RFC 9637)",
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique-local (RFC 4193)",
    ),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local (deprecated)",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// IPv6 prefixes whose last 32 bits are an IPv4 address that the stack (or a SIIT
/// translator) will actually reach. Such an address is judged as that IPv4 address,
/// so `[::ffff:127.0.0.1]` is loopback and `[::ffff:8.8.8.8]` passes like 8.8.8.8.
/// `::` and `::1` match [`REFUSED`] rows first, so they keep their IPv6 reasons.
pub const EMBEDS_V4: &[(IpNet, &str)] = &[
    (
        v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
        "IPv4-mapped (::ffff:a.b.c.d)",
    ),
    (
        v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96),
        "IPv4-translated (::ffff:0:a.b.c.d, RFC 2765)",
    ),
    (
        v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
        "IPv4-compatible (::a.b.c.d, deprecated)",
    ),
];

/// The IPv4 address embedded in `ip` by one of [`EMBEDS_V4`]'s prefixes, if any.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let addr = IpAddr::V6(ip);
    EMBEDS_V4
        .iter()
        .any(|(net, _)| net.contains(&addr))
        .then(|| Ipv4Addr::from(ip.to_bits() as u32))
}

/// Why `ip` is refused, or `None` when it may be connected to.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    if let Some(reason) = table_reason(ip) {
        return Some(reason);
    }
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).and_then(|v4| table_reason(IpAddr::V4(v4))),
        IpAddr::V4(_) => None,
    }
}

fn table_reason(ip: IpAddr) -> Option<&'static str> {
    REFUSED
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, reason)| *reason)
}

/// A target the guard will not let the fetcher reach. From [`GuardResolver`] it
/// travels inside the client's connect error and is found again by walking the
/// error's `source()` chain; the fetcher's own checks return it directly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{target} refused: {reason}")]
pub struct Refused {
    /// The address, host or URL that was refused.
    pub target: String,
    /// Why, in words an operator can act on.
    pub reason: &'static str,
}

impl Refused {
    pub fn new(target: impl fmt::Display, reason: &'static str) -> Self {
        Self {
            target: target.to_string(),
            reason,
        }
    }
}

/// What a URL's host needs before it may be connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCheck {
    /// The host is an IP literal and the guard let it pass.
    Allowed(IpAddr),
    /// The host is a name: every address it resolves to must be checked, at the
    /// moment of connecting (which [`GuardResolver`] does).
    NeedsResolve(String),
}

/// The address rules plus the operator's lifts (DESIGN §5).
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow_private: bool,
    allow_cidrs: Vec<IpNet>,
}

impl Guard {
    pub fn new(allow_private: bool, allow_cidrs: Vec<IpNet>) -> Self {
        Self {
            allow_private,
            allow_cidrs,
        }
    }

    /// `Ok` when `ip` may be connected to. `allow_private` lifts every rule (tests,
    /// intranets); `allow_cidrs` lifts only the listed ranges, so allowing
    /// `127.0.0.1/32` still refuses `127.0.0.2`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let Some(reason) = classify(ip) else {
            return Ok(());
        };
        if self.allow_private || self.is_allowed(ip) {
            return Ok(());
        }
        Err(Refused::new(ip, reason))
    }

    fn is_allowed(&self, ip: IpAddr) -> bool {
        // A mapped address reaches its IPv4, so an allowed IPv4 range covers it too;
        // otherwise allowing 127.0.0.1/32 would still refuse [::ffff:127.0.0.1].
        let embedded = match ip {
            IpAddr::V6(v6) if table_reason(ip).is_none() => embedded_v4(v6).map(IpAddr::V4),
            _ => None,
        };
        self.allow_cidrs
            .iter()
            .any(|net| net.contains(&ip) || embedded.is_some_and(|e| net.contains(&e)))
    }

    /// Checks the host of `url` as far as it can be checked without DNS.
    ///
    /// The url crate has already turned odd IPv4 spellings (`0177.0.0.1`,
    /// `2130706433`, `0x7f.1`, `0`) into `Host::Ipv4`, so they are judged by what they
    /// mean. IP literals must be judged here: the connector never calls the resolver for
    /// them (the "known trap" of DESIGN §5).
    pub fn check_url_host(&self, url: &Url) -> Result<HostCheck, Refused> {
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(name)) => {
                // A dotted-decimal name that the url crate left as a domain (it does so
                // only for non-special schemes) is still an address; judge it as one.
                return match name.trim_end_matches('.').parse::<IpAddr>() {
                    Ok(ip) => self.check(ip).map(|()| HostCheck::Allowed(ip)),
                    Err(_) => Ok(HostCheck::NeedsResolve(name.to_owned())),
                };
            }
            None => return Err(Refused::new(url, "URL has no host")),
        };
        self.check(ip).map(|()| HostCheck::Allowed(ip))
    }
}

/// A boxed future of a name lookup.
pub type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// How names become addresses. Production uses [`SystemLookup`]; tests inject a map
/// (`evil.test` → 127.0.0.2) so they never touch real DNS.
pub trait NameLookup: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> Lookup;
}

/// The system resolver, through `tokio::net::lookup_host` (getaddrinfo on a blocking
/// thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl NameLookup for SystemLookup {
    fn lookup(&self, host: &str) -> Lookup {
        let host = host.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|sa| sa.ip()).collect())
        })
    }
}

/// The connector's resolver: looks a name up and hands the connector the answer only when
/// every address in it passes the guard. Refusing the whole answer (rather than
/// filtering it) means the addresses checked are exactly the ones it may connect
/// to, and a name that mixes a public and an internal address is treated as hostile.
#[derive(Clone)]
pub struct GuardResolver {
    guard: Arc<Guard>,
    lookup: Arc<dyn NameLookup>,
}

impl GuardResolver {
    pub fn new(guard: Arc<Guard>, lookup: Arc<dyn NameLookup>) -> Self {
        Self { guard, lookup }
    }

    /// Resolves `host` and checks the answer; used by the connector at connect time and by
    /// the creation-time check.
    pub async fn resolve_checked(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let addrs = self
            .lookup
            .lookup(host)
            .await
            .map_err(ResolveError::Lookup)?;
        if addrs.is_empty() {
            return Err(ResolveError::Lookup(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}: no addresses"),
            )));
        }
        for ip in &addrs {
            self.guard.check(*ip).map_err(|r| {
                ResolveError::Refused(Refused::new(format!("{host} ({})", r.target), r.reason))
            })?;
        }
        Ok(addrs)
    }
}

impl fmt::Debug for GuardResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardResolver")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

/// Why a guarded resolution gave no addresses.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name resolved, but to something the guard refuses.
    #[error(transparent)]
    Refused(Refused),
    /// The name did not resolve (or resolved to nothing).
    #[error("lookup failed: {0}")]
    Lookup(io::Error),
}

/// The connector's resolver: the addresses of a checked answer, or the error that
/// says why there are none.
impl tower::Service<Name> for GuardResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            match this.resolve_checked(name.as_str()).await {
                // Port 0: the connector substitutes the URL's port (or the scheme's).
                Ok(addrs) => Ok(addrs
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter()),
                // The bare `Refused` is boxed so that `FetchError` mapping can find it
                // by downcasting along the error's source chain.
                Err(ResolveError::Refused(r)) => Err(Box::new(r) as _),
                Err(e @ ResolveError::Lookup(_)) => Err(Box::new(e) as _),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// One sample per row of [`REFUSED`], in table order; the reason must be that row's
    /// reason, which proves no earlier row shadows it.
    const SAMPLES: &[&str] = &[
        "169.254.169.254",
        "100.100.100.200",
        "fd00:ec2::254",
        "0.1.2.3",
        "10.20.30.40",
        "100.127.255.254",
        "127.0.0.2",
        "169.254.1.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.19.0.1",
        "198.51.100.7",
        "203.0.113.9",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "::",
        "::1",
        "64:ff9b::8.8.8.8",
        "64:ff9b:1::1",
        "100::1",
        "2001::1",
        "2001:2::1",
        "2001:10::1",
        "2001:db8::1",
        "2002:c000:0201::1",
        "3fff::1",
        "fc00::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
    ];

    #[test]
    fn every_refused_row_has_a_sample_that_it_classifies() {
        assert_eq!(SAMPLES.len(), REFUSED.len(), "one sample per table row");
        for (sample, (net, reason)) in SAMPLES.iter().zip(REFUSED) {
            let ip: IpAddr = sample.parse().expect("sample parses");
            assert!(net.contains(&ip), "{sample} is not in {net}");
            assert_eq!(classify(ip), Some(*reason), "{sample} ({net})");
        }
    }

    #[test]
    fn every_embedding_prefix_is_judged_by_its_ipv4() {
        for (prefix, what) in EMBEDS_V4 {
            let IpNet::V6(net) = prefix else {
                panic!("{what}: embedding prefixes are IPv6");
            };
            let base = net.network().to_bits();
            for (v4, want) in [
                ("127.0.0.1", Some("loopback")),
                ("10.1.2.3", Some("private (RFC 1918)")),
                (
                    "169.254.169.254",
                    Some("cloud metadata (AWS, GCP, Azure, OpenStack)"),
                ),
                ("8.8.8.8", None),
            ] {
                let v4: Ipv4Addr = v4.parse().expect("v4 sample");
                let ip = IpAddr::V6(Ipv6Addr::from_bits(base | u128::from(v4.to_bits())));
                assert_eq!(classify(ip), want, "{what}: {ip}");
            }
        }
    }

    /// Odd spellings, read by `url::Url` exactly as the fetcher reads them. `None`
    /// means "must pass"; those are only classified, never connected to.
    const SPELLINGS: &[(&str, Option<&str>)] = &[
        ("http://0177.0.0.1/", Some("loopback")),
        ("http://2130706433/", Some("loopback")),
        ("http://0x7f000001/", Some("loopback")),
        ("http://0x7f.1/", Some("loopback")),
        ("http://127.1/", Some("loopback")),
        ("http://127.0.0.1./", Some("loopback")),
        (
            "http://0/",
            Some("unspecified / \"this network\" (0.0.0.0/8)"),
        ),
        (
            "http://0.0.0.0/",
            Some("unspecified / \"this network\" (0.0.0.0/8)"),
        ),
        ("http://[::]/", Some("unspecified (::)")),
        ("http://[::1]/", Some("loopback (::1)")),
        ("http://[::ffff:127.0.0.1]/", Some("loopback")),
        ("http://[::ffff:7f00:1]/", Some("loopback")),
        ("http://[::127.0.0.1]/", Some("loopback")),
        ("http://[::ffff:0:127.0.0.1]/", Some("loopback")),
        ("http://[0:0:0:0:0:ffff:a00:1]/", Some("private (RFC 1918)")),
        (
            "http://[64:ff9b::a9fe:a9fe]/",
            Some("NAT64 well-known prefix (RFC 6052)"),
        ),
        (
            "http://169.254.169.254/",
            Some("cloud metadata (AWS, GCP, Azure, OpenStack)"),
        ),
        (
            "http://0xa9fea9fe/",
            Some("cloud metadata (AWS, GCP, Azure, OpenStack)"),
        ),
        (
            "http://[::ffff:169.254.169.254]/",
            Some("cloud metadata (AWS, GCP, Azure, OpenStack)"),
        ),
        ("http://[fd00:ec2::254]/", Some("cloud metadata (AWS IPv6)")),
        (
            "http://100.100.100.200/",
            Some("cloud metadata (Alibaba Cloud)"),
        ),
        ("http://100.64.0.1/", Some("carrier-grade NAT (RFC 6598)")),
        ("http://10.0.0.1/", Some("private (RFC 1918)")),
        ("http://012.0.0.1/", Some("private (RFC 1918)")),
        ("http://172.16.0.1/", Some("private (RFC 1918)")),
        ("http://192.168.0.1:8080/", Some("private (RFC 1918)")),
        ("http://[fe80::1]/", Some("link-local")),
        ("http://[fc00::1]/", Some("unique-local (RFC 4193)")),
        ("http://[fd12:3456::1]/", Some("unique-local (RFC 4193)")),
        ("http://224.0.0.1/", Some("multicast")),
        ("http://[ff02::1]/", Some("multicast")),
        ("http://255.255.255.255/", Some("broadcast")),
        ("http://192.0.2.1/", Some("documentation (TEST-NET-1)")),
        ("http://[2001:db8::1]/", Some("documentation (RFC 3849)")),
        ("https://198.18.0.1/", Some("benchmarking (RFC 2544)")),
        ("http://8.8.8.8/", None),
        ("http://1.1.1.1/", None),
        ("http://134744072/", None),
        ("https://93.184.215.14:8443/x.jpg", None),
        ("http://[2606:4700:4700::1111]/", None),
        ("http://[::ffff:8.8.8.8]/", None),
        ("http://[2a00:1450:4001:80b::200e]/", None),
    ];

    #[test]
    fn every_odd_spelling_is_judged_by_what_it_means() {
        let guard = Guard::default();
        for (input, want) in SPELLINGS {
            let url = Url::parse(input).expect("spelling parses as a URL");
            let got = guard.check_url_host(&url);
            match want {
                Some(reason) => {
                    let err = got.expect_err(input);
                    assert_eq!(err.reason, *reason, "{input}");
                }
                None => assert!(
                    matches!(got, Ok(HostCheck::Allowed(_) | HostCheck::NeedsResolve(_))),
                    "{input}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn names_need_resolving_and_literals_do_not() {
        let guard = Guard::default();
        let url = Url::parse("https://cdn.example.com/a.jpg").expect("url");
        assert_eq!(
            guard.check_url_host(&url),
            Ok(HostCheck::NeedsResolve("cdn.example.com".into()))
        );
        let url = Url::parse("https://8.8.8.8/a.jpg").expect("url");
        assert_eq!(
            guard.check_url_host(&url),
            Ok(HostCheck::Allowed("8.8.8.8".parse().expect("ip")))
        );
        // A non-special scheme keeps dotted decimals as a "domain"; still an address.
        let url = Url::parse("foo://127.0.0.1/").expect("url");
        assert!(guard.check_url_host(&url).is_err());
    }

    #[test]
    fn allowed_cidr_lifts_only_its_range() {
        let guard = Guard::new(false, vec!["127.0.0.1/32".parse().expect("cidr")]);
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(guard.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(guard.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(
            guard.check(ip("127.0.0.2")),
            Err(Refused::new("127.0.0.2", "loopback"))
        );
        assert!(guard.check(ip("::1")).is_err());
        assert!(guard.check(ip("169.254.169.254")).is_err());
        assert!(guard.check(ip("10.0.0.1")).is_err());
        // The NAT64 prefix is refused as a whole; an allowed IPv4 does not lift it.
        assert!(guard.check(ip("64:ff9b::127.0.0.1")).is_err());
    }

    #[test]
    fn allow_private_lifts_everything() {
        let guard = Guard::new(true, Vec::new());
        for sample in SAMPLES {
            assert_eq!(guard.check(sample.parse().expect("ip")), Ok(()), "{sample}");
        }
    }

    struct MapLookup(HashMap<&'static str, Vec<IpAddr>>);

    impl NameLookup for MapLookup {
        fn lookup(&self, host: &str) -> Lookup {
            let found = self.0.get(host).cloned();
            Box::pin(async move {
                found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"))
            })
        }
    }

    #[tokio::test]
    async fn resolver_refuses_the_whole_answer_if_any_address_is_refused() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let lookup = MapLookup(HashMap::from([
            ("good.test", vec![ip("8.8.8.8"), ip("2606:4700::1")]),
            ("mixed.test", vec![ip("8.8.8.8"), ip("10.0.0.1")]),
            ("empty.test", vec![]),
        ]));
        let resolver = GuardResolver::new(Arc::new(Guard::default()), Arc::new(lookup));
        assert_eq!(
            resolver.resolve_checked("good.test").await.expect("good"),
            vec![ip("8.8.8.8"), ip("2606:4700::1")]
        );
        match resolver.resolve_checked("mixed.test").await {
            Err(ResolveError::Refused(r)) => assert_eq!(r.reason, "private (RFC 1918)"),
            other => panic!("mixed answer not refused: {other:?}"),
        }
        assert!(matches!(
            resolver.resolve_checked("empty.test").await,
            Err(ResolveError::Lookup(_))
        ));
        assert!(matches!(
            resolver.resolve_checked("nope.test").await,
            Err(ResolveError::Lookup(_))
        ));
    }

    proptest! {
        #[test]
        fn classify_never_panics_and_mapped_agrees_with_v4(bits in any::<u32>()) {
            let v4 = Ipv4Addr::from_bits(bits);
            let want = classify(IpAddr::V4(v4));
            prop_assert_eq!(classify(IpAddr::V6(v4.to_ipv6_mapped())), want);
            let translated = Ipv6Addr::from_bits((0xffff_u128 << 32 << 16) | u128::from(bits));
            prop_assert_eq!(classify(IpAddr::V6(translated)), want);
            let guard = Guard::new(false, vec!["127.0.0.1/32".parse().expect("cidr")]);
            prop_assert_eq!(
                guard.check(IpAddr::V4(v4)).is_ok(),
                guard.check(IpAddr::V6(v4.to_ipv6_mapped())).is_ok()
            );
        }

        #[test]
        fn classify_never_panics_on_any_v6(bits in any::<u128>()) {
            let ip = Ipv6Addr::from_bits(bits);
            let reason = classify(IpAddr::V6(ip));
            if let Some(v4) = ip.to_ipv4_mapped() {
                prop_assert_eq!(reason, classify(IpAddr::V4(v4)));
            }
            // Through the URL parser too: a bracketed literal comes back as itself.
            let url = Url::parse(&format!("http://[{ip}]/")).expect("v6 literal url");
            prop_assert_eq!(url.host(), Some(Host::Ipv6(ip)));
            // An address that embeds a refused IPv4 is refused itself.
            if let Some(v4) = embedded_v4(ip)
                && classify(IpAddr::V4(v4)).is_some()
            {
                prop_assert!(reason.is_some(), "{} embeds refused {}", ip, v4);
            }
        }

        // The same invariants as fuzz/fuzz_targets/canon_guard.rs, for `cargo test`:
        // a URL's literal host passes exactly when `classify` has no reason against
        // it, whatever its spelling, and allow-private lets everything through.
        #[test]
        fn url_literal_hosts_are_judged_like_their_address(
            bits in any::<u32>(),
            spelling in 0..4usize,
            v6 in any::<u128>(),
        ) {
            let v4 = Ipv4Addr::from_bits(bits);
            let host = match spelling {
                0 => v4.to_string(),
                1 => bits.to_string(),
                2 => format!("0x{bits:x}"),
                _ => format!("[{}]", v4.to_ipv6_mapped()),
            };
            let strict = Guard::new(false, Vec::new());
            let open = Guard::new(true, Vec::new());
            let url = Url::parse(&format!("http://{host}/a.jpg")).expect("literal url");
            let want = classify(IpAddr::V4(v4));
            match strict.check_url_host(&url) {
                Ok(HostCheck::Allowed(_)) => prop_assert_eq!(want, None, "{}", url),
                Err(r) => prop_assert_eq!(Some(r.reason), want, "{}", url),
                Ok(HostCheck::NeedsResolve(n)) => prop_assert!(false, "{} sent to DNS as {}", url, n),
            }
            prop_assert!(open.check_url_host(&url).is_ok());
            let ip = Ipv6Addr::from_bits(v6);
            let url = Url::parse(&format!("http://[{ip}]/")).expect("v6 literal url");
            prop_assert_eq!(
                strict.check_url_host(&url).is_ok(),
                classify(IpAddr::V6(ip)).is_none()
            );
        }
    }
}
