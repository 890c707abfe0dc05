//! Fuzz target: the URL canonicalizer and the SSRF guard, the two functions that see
//! a sender's URL first. Invariants (DESIGN §2, §5):
//! - a canonical URL is http(s), has a host, no userinfo, fits the length limit, and
//!   canonicalizes to itself;
//! - a literal host passes the guard exactly when `classify` finds no reason to refuse
//!   it, and `--allow-private-upstreams` lets everything through;
//! - an IPv4 address and its IPv4-mapped and IPv4-translated IPv6 forms are classified
//!   alike, for every address derived from the input bytes.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use medialink::canon::{CanonicalUrl, MAX_URL_LEN};
use medialink::fetch::guard::{Guard, HostCheck, classify, embedded_v4};
use url::Host;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        check_url(s);
    }
    check_addresses(data);
});

fn check_url(s: &str) {
    let Ok(c) = CanonicalUrl::parse(s) else {
        return;
    };
    let url = c.url();
    assert!(matches!(url.scheme(), "http" | "https"), "{c}");
    assert!(url.host().is_some(), "{c}");
    assert!(url.username().is_empty() && url.password().is_none(), "{c}");
    assert!(c.as_str().len() <= MAX_URL_LEN);
    let again = CanonicalUrl::parse(c.as_str()).expect("a canonical URL parses again");
    assert_eq!(again.as_str(), c.as_str());

    let strict = Guard::new(false, Vec::new());
    let literal = match url.host() {
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    match (strict.check_url_host(url), literal) {
        (Ok(HostCheck::Allowed(ip)), Some(lit)) => {
            assert_eq!(ip, lit);
            assert_eq!(classify(ip), None, "{c} passed but {ip} is refused");
        }
        (Err(refused), Some(lit)) => {
            assert_eq!(Some(refused.reason), classify(lit), "{c}");
        }
        (Ok(HostCheck::NeedsResolve(name)), Some(lit)) => {
            panic!("{c}: literal {lit} sent to DNS as {name}")
        }
        // A domain: either needs DNS, or is a dotted address the guard judged itself.
        (Ok(HostCheck::Allowed(ip)), None) => assert_eq!(classify(ip), None, "{c}"),
        (Ok(HostCheck::NeedsResolve(_)), None) | (Err(_), None) => {}
    }
    let open = Guard::new(true, Vec::new());
    assert!(open.check_url_host(url).is_ok(), "allow-private refused {c}");
}

fn check_addresses(data: &[u8]) {
    for chunk in data.chunks(4) {
        let mut b = [0u8; 4];
        b[..chunk.len()].copy_from_slice(chunk);
        let v4 = Ipv4Addr::from(b);
        let want = classify(IpAddr::V4(v4));
        let mapped = v4.to_ipv6_mapped();
        assert_eq!(classify(IpAddr::V6(mapped)), want, "{mapped} vs {v4}");
        assert_eq!(embedded_v4(mapped), Some(v4));
        let translated = Ipv6Addr::from_bits((0xffff_u128 << 32 << 16) | u128::from(v4.to_bits()));
        assert_eq!(classify(IpAddr::V6(translated)), want, "{translated} vs {v4}");
        let strict = Guard::new(false, Vec::new());
        assert_eq!(
            strict.check(IpAddr::V4(v4)).is_ok(),
            strict.check(IpAddr::V6(mapped)).is_ok(),
            "{v4}"
        );
    }
    for chunk in data.chunks(16) {
        let mut b = [0u8; 16];
        b[..chunk.len()].copy_from_slice(chunk);
        let v6 = Ipv6Addr::from(b);
        let reason = classify(IpAddr::V6(v6));
        if let Some(v4) = v6.to_ipv4_mapped() {
            assert_eq!(reason, classify(IpAddr::V4(v4)), "{v6}");
        }
        // Any address that embeds a refused IPv4 is refused too.
        if let Some(v4) = embedded_v4(v6)
            && classify(IpAddr::V4(v4)).is_some()
        {
            assert!(reason.is_some(), "{v6} embeds refused {v4} but passes");
        }
        // The bracketed literal, through the canonicalizer, is judged the same.
        let c = CanonicalUrl::parse(&format!("http://[{v6}]/")).expect("v6 literal URL");
        let strict = Guard::new(false, Vec::new());
        assert_eq!(strict.check_url_host(c.url()).is_ok(), reason.is_none(), "{v6}");
    }
}
