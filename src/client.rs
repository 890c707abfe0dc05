//! A client of medialink's own API, for the CLI commands that talk to a running
//! server (`shorten --server`, `send`, `inspect --server`). Problems come back as
//! typed errors.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad server URL: {0}")]
    BadServer(String),
    #[error("cannot reach medialink at {server}: {detail}")]
    Unreachable { server: String, detail: String },
    /// The server answered with a problem (DESIGN §3).
    #[error("medialink refused ({status} {code}): {detail}")]
    Problem {
        status: u16,
        code: String,
        detail: String,
    },
    #[error("unexpected answer from medialink: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone, Deserialize)]
pub struct LinkAnswer {
    pub id: String,
    pub short_url: String,
    pub url: String,
    #[serde(default)]
    pub media: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ProblemBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    detail: String,
}

#[derive(Clone)]
pub struct Client {
    base: url::Url,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(server: url::Url, token: String) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            // Verification fetches the upstream before answering: allow its 30 s.
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::BadServer(e.to_string()))?;
        Ok(Self {
            base: server,
            token,
            http,
        })
    }

    fn endpoint(&self, path: &str) -> Result<url::Url, ClientError> {
        let base = self.base.as_str().trim_end_matches('/');
        url::Url::parse(&format!("{base}{path}")).map_err(|e| ClientError::BadServer(e.to_string()))
    }

    /// `POST /api/v1/links` with any create body.
    pub async fn create(&self, body: &serde_json::Value) -> Result<LinkAnswer, ClientError> {
        let req = self.http.post(self.endpoint("/api/v1/links")?).json(body);
        let bytes = self.call(req).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `GET /api/v1/links/{id}/events`: the link and its delivery trace.
    pub async fn events(&self, id: &str) -> Result<crate::api::events::LinkTrace, ClientError> {
        let req = self
            .http
            .get(self.endpoint(&format!("/api/v1/links/{id}/events"))?);
        let bytes = self.call(req).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `POST /api/v1/links/{id}/events`: puts a send made here on the link's trace.
    pub async fn report_send(
        &self,
        id: &str,
        kind: crate::sender::MediaKind,
        outcome: &crate::sender::Outcome,
    ) -> Result<(), ClientError> {
        let req = self
            .http
            .post(self.endpoint(&format!("/api/v1/links/{id}/events"))?)
            .json(&serde_json::json!({"kind": kind, "outcome": outcome}));
        self.call(req).await.map(drop)
    }

    /// Sends with the token; a 2xx body, or the problem as an error.
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<bytes::Bytes, ClientError> {
        let res =
            req.bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| ClientError::Unreachable {
                    server: self.base.to_string(),
                    detail: e.to_string(),
                })?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(|e| ClientError::Unreachable {
            server: self.base.to_string(),
            detail: e.to_string(),
        })?;
        if (200..300).contains(&status) {
            Ok(bytes)
        } else {
            let p: ProblemBody = serde_json::from_slice(&bytes).unwrap_or(ProblemBody {
                code: String::new(),
                detail: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            });
            Err(ClientError::Problem {
                status,
                code: p.code,
                detail: p.detail,
            })
        }
    }
}

/// The sender's shortener when it runs outside the server (`medialink send`): asks a
/// running medialink for a verified, pinned short link.
pub struct HttpShortener(pub Client);

#[async_trait::async_trait]
impl crate::sender::Shortener for HttpShortener {
    async fn shorten(
        &self,
        url: &str,
        kind: crate::sender::MediaKind,
    ) -> Result<String, crate::sender::ShortenError> {
        use crate::sender::ShortenError;
        let body =
            serde_json::json!({"url": url, "kind": kind.link_kind(), "verify": true, "pin": true});
        match self.0.create(&body).await {
            Ok(link) => Ok(link.short_url),
            Err(ClientError::Problem { code, detail, .. }) => {
                Err(ShortenError::Rejected { code, detail })
            }
            Err(e) => Err(ShortenError::Unavailable(e.to_string())),
        }
    }
}

/// For text messages, which need no short link: any call is a usage mistake.
pub struct NoShortener;

#[async_trait::async_trait]
impl crate::sender::Shortener for NoShortener {
    async fn shorten(
        &self,
        _: &str,
        _: crate::sender::MediaKind,
    ) -> Result<String, crate::sender::ShortenError> {
        Err(crate::sender::ShortenError::Unavailable(
            "no medialink server given (--server)".into(),
        ))
    }
}
