//! URL canonicalization (DESIGN §2): the one place a raw URL becomes a `CanonicalUrl`.
//!
//! Only `http`/`https` with a host and no userinfo get through; everything downstream
//! (ids, the store, the fetcher) takes the canonical type and never re-checks.

use std::fmt;

use url::Url;

/// Longest URL accepted, in bytes (DESIGN §3: 413 `url_too_long` past it).
pub const MAX_URL_LEN: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    #[error("the URL is {len} bytes long; at most {MAX_URL_LEN} are accepted")]
    TooLong { len: usize },
    #[error("not a valid absolute URL: {0}")]
    Invalid(String),
    #[error("scheme `{0}` is not supported; use http or https")]
    UnsupportedScheme(String),
    #[error("URLs with a user name or password are refused: credentials are never forwarded")]
    Userinfo,
}

/// A URL re-serialized by the `url` crate: scheme and host lower-case, default port
/// dropped, percent-encoding normalized. Equal canonical URLs mean the same link.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CanonicalUrl(Url);

impl CanonicalUrl {
    pub fn parse(input: &str) -> Result<Self, CanonError> {
        if input.len() > MAX_URL_LEN {
            return Err(CanonError::TooLong { len: input.len() });
        }
        let url = Url::parse(input.trim()).map_err(|e| CanonError::Invalid(e.to_string()))?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(CanonError::UnsupportedScheme(other.to_owned())),
        }
        if url.host().is_none() {
            return Err(CanonError::Invalid("the URL has no host".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CanonError::Userinfo);
        }
        // Re-serialization can grow a URL (percent-encoding), so check again.
        if url.as_str().len() > MAX_URL_LEN {
            return Err(CanonError::TooLong {
                len: url.as_str().len(),
            });
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The extension of the path's last segment, lower-cased, if it has one.
    pub fn path_extension(&self) -> Option<String> {
        let last = self.0.path_segments()?.next_back()?;
        let (_, ext) = last.rsplit_once('.')?;
        (!ext.is_empty() && ext.len() <= 5).then(|| ext.to_ascii_lowercase())
    }
}

impl fmt::Debug for CanonicalUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CanonicalUrl({})", self.0)
    }
}

impl fmt::Display for CanonicalUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lowercases_scheme_and_host_and_drops_default_port() {
        let c = CanonicalUrl::parse("HTTPS://CDN.Example.COM:443/A.jpg?X=1").unwrap();
        assert_eq!(c.as_str(), "https://cdn.example.com/A.jpg?X=1");
    }

    #[test]
    fn signed_query_survives_unchanged() {
        let s = "https://cdn.example.com/a.jpg?X-Amz-Signature=ab%2Fcd&token=x=y&caption=a";
        assert_eq!(CanonicalUrl::parse(s).unwrap().as_str(), s);
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            CanonicalUrl::parse("not a url"),
            Err(CanonError::Invalid(_))
        ));
        assert!(matches!(
            CanonicalUrl::parse("ftp://x.example/a"),
            Err(CanonError::UnsupportedScheme(s)) if s == "ftp"
        ));
        assert!(matches!(
            CanonicalUrl::parse("https://u:p@x.example/"),
            Err(CanonError::Userinfo)
        ));
        let long = format!("https://x.example/{}", "a".repeat(MAX_URL_LEN));
        assert!(matches!(
            CanonicalUrl::parse(&long),
            Err(CanonError::TooLong { .. })
        ));
    }

    #[test]
    fn path_extension() {
        let ext = |s: &str| CanonicalUrl::parse(s).unwrap().path_extension();
        assert_eq!(ext("https://x.example/a/b.JPG?q=1").as_deref(), Some("jpg"));
        assert_eq!(ext("https://x.example/a/b"), None);
        assert_eq!(ext("https://x.example/"), None);
    }

    proptest! {
        #[test]
        fn canonicalization_is_idempotent(s in "\\PC{0,200}") {
            if let Ok(c) = CanonicalUrl::parse(&s) {
                let again = CanonicalUrl::parse(c.as_str()).unwrap();
                prop_assert_eq!(again.as_str(), c.as_str());
            }
        }

        // What fuzz/fuzz_targets/canon_guard.rs asserts, for `cargo test`: whatever
        // gets through is http(s), has a host, carries no credentials, fits the limit.
        #[test]
        fn canonical_urls_keep_the_contract(
            scheme in "(?i)https?|ftp|file|javascript|data",
            userinfo in "([a-z]{1,5}(:[a-z]{0,5})?@)?",
            host in "[A-Za-z0-9.\\-]{0,20}|\\[[0-9a-f:.]{0,30}\\]",
            rest in "\\PC{0,60}",
        ) {
            let s = format!("{scheme}://{userinfo}{host}{rest}");
            if let Ok(c) = CanonicalUrl::parse(&s) {
                let u = c.url();
                prop_assert!(matches!(u.scheme(), "http" | "https"), "{}", c);
                prop_assert!(u.host().is_some(), "{}", c);
                prop_assert!(u.username().is_empty() && u.password().is_none(), "{}", c);
                prop_assert!(c.as_str().len() <= MAX_URL_LEN);
            }
        }

        #[test]
        fn http_urls_with_odd_paths_canonicalize_idempotently(
            host in "[a-z]{1,10}\\.[a-z]{2,3}", path in "[ -~]{0,80}"
        ) {
            let s = format!("http://{host}/{path}");
            if let Ok(c) = CanonicalUrl::parse(&s) {
                let again = CanonicalUrl::parse(c.as_str()).unwrap();
                prop_assert_eq!(again.as_str(), c.as_str());
            }
        }
    }
}
