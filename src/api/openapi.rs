//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers'
//! `#[utoipa::path]` annotations and the JSON types' `ToSchema` derives, served at
//! `GET /api/v1/openapi.json`. CI runs schemathesis against it (`.ci/run`), so a
//! documented shape that the code does not answer fails the build.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::links::{CreateLink, LinkView};

/// An RFC 9457 problem, as every error answers (DESIGN §3). Members beyond these
/// may appear (e.g. `outcome` on a failed send).
#[derive(Serialize, ToSchema)]
pub struct ProblemDoc {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// A stable code from DESIGN §3, e.g. `upstream_not_media`.
    pub code: String,
    /// The request's `X-Request-Id`.
    pub request_id: Option<String>,
}

/// One link to create, or up to 1,000 in an array.
#[derive(serde::Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CreateBody {
    One(CreateLink),
    Many(Vec<CreateLink>),
}

/// One item of a batch answer: the link, or the problem that refused it.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchItem {
    Link(LinkView),
    Problem(ProblemDoc),
}

/// A create's answer: the link for one object, an array for an array.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum CreateAnswer {
    One(LinkView),
    Many(Vec<BatchItem>),
}

/// The body of `POST /api/v1/send` (DESIGN §9), one shape per kind: image and audio
/// need the media's `url`, text needs a non-blank `text`. The handler parses
/// `sender::SendRequest` and refuses what these shapes leave out with a 400 problem;
/// stating the shapes lets a client (or the fuzzer) build a body that is accepted.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SendBody {
    Media(SendMedia),
    Text(SendText),
}

/// A phone number with its country code (digits, spaces, `( ) - .` and one leading
/// `+`; 10 to 15 digits, the first not 0) or a person jid `<digits>@s.whatsapp.net`.
/// The pattern is what `sender::jid::normalize` accepts (a test keeps them equal),
/// spaces around it aside.
#[derive(Serialize, ToSchema)]
#[schema(
    pattern = r"^[ \t\r\n]*(?:\+?[ ().-]*[1-9](?:[ ().-]*[0-9]){9,14}[ ().-]*|[1-9][0-9]{9,14}@[sS]\.[wW][hH][aA][tT][sS][aA][pP][pP]\.[nN][eE][tT])[ \t\r\n]*$",
    example = "+7 701 570 55 55"
)]
pub struct Phone(String);

/// An image or a voice note (`audio`, or its alias `voice`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMedia {
    to: Phone,
    kind: MediaSendKind,
    /// The media's absolute http(s) URL; medialink verifies it and sends its own
    /// short link.
    #[schema(min_length = 1, example = "https://cdn.example.com/photo.jpg")]
    url: String,
    /// The image's caption, also sent after the link in the fallback text.
    caption: Option<String>,
    /// Ignored for image and audio.
    text: Option<String>,
    /// When the gateway does not deliver the media, send its short link as text.
    #[serde(default)]
    fallback_text: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaSendKind {
    Image,
    Audio,
    Voice,
}

/// A text message.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendText {
    to: Phone,
    kind: TextSendKind,
    /// The message; not blank.
    #[schema(pattern = r"\S", example = "Hello!")]
    text: String,
    /// Ignored for text.
    url: Option<String>,
    /// Ignored for text.
    caption: Option<String>,
    /// Ignored for text.
    #[serde(default)]
    fallback_text: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TextSendKind {
    Text,
}

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "medialink",
        description = "Short links that serve verified image and audio bytes, a sender for the ChatFlow gateway, and each link's delivery trace."
    ),
    paths(
        crate::api::links::create,
        crate::api::links::get,
        crate::api::links::delete,
        crate::api::events::recent,
        crate::api::events::list_events,
        crate::api::events::report_send,
        crate::api::send::send,
        crate::api::check::check,
        crate::api::healthz,
        crate::api::readyz,
    ),
    components(schemas(ProblemDoc, CreateBody, CreateAnswer, BatchItem, Health, SendBody)),
    modifiers(&Bearer),
    tags(
        (name = "links", description = "Short links and their delivery traces"),
        (name = "send", description = "Delivery through the gateway"),
        (name = "media", description = "Media verdicts"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_json().unwrap_or_default());

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Response {
    let mut res = DOCUMENT.as_str().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `Phone`'s pattern as the document states it, compiled.
    fn phone_pattern() -> regex::Regex {
        let v: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        let pattern = v["components"]["schemas"]["Phone"]["pattern"]
            .as_str()
            .expect("Phone has a pattern");
        regex::Regex::new(pattern).unwrap()
    }

    proptest! {
        /// The document's pattern and `normalize` accept the same strings, so the
        /// document neither promises numbers the API refuses nor hides ones it takes.
        #[test]
        fn the_phone_pattern_agrees_with_normalize(to in prop_oneof![
            // Digit counts either side of 10 and 15, with and without separators.
            r"[ \t]{0,2}\+?[0-9]{8,17}[ \t]{0,2}",
            r"\+?[ (]{0,2}[0-9]([ ().-]{0,2}[0-9]){7,16}[ )]{0,2}",
            r"[0-9]{8,17}@(s|S)\.(whatsapp|WhatsApp|WHATSAPP|whatsap)\.(net|NET|com)",
            r"[ 0-9()+.@a-zA-Z*-]{0,20}",
        ]) {
            let documented = phone_pattern().is_match(&to);
            prop_assert_eq!(documented, crate::sender::normalize(&to).is_ok(), "{:?}", to);
        }
    }

    #[test]
    fn the_phone_pattern_takes_the_documented_spellings() {
        let re = phone_pattern();
        for ok in [
            "+7 (701) 570-55-55",
            "8 701 570 55 55",
            "77015705555@S.WhatsApp.Net",
        ] {
            assert!(re.is_match(ok), "{ok}");
        }
        for bad in [
            "",
            "+0 701 570 55 55",
            "7701557",
            "7701 570 55 55 55 555",
            "+7 701 abc",
        ] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }

    /// A body of each documented shape parses as the handler's own type (the same
    /// field and kind names), and each shape requires what its kind needs.
    #[test]
    fn each_send_shape_is_a_body_the_handler_takes() {
        let v: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        let body = &v["paths"]["/api/v1/send"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert_eq!(body["$ref"], "#/components/schemas/SendBody");
        let schemas = &v["components"]["schemas"];
        assert_eq!(
            schemas["SendBody"]["oneOf"].as_array().map(Vec::len),
            Some(2)
        );
        let required = |name: &str| -> Vec<String> {
            serde_json::from_value(schemas[name]["required"].clone()).unwrap()
        };
        assert_eq!(required("SendMedia"), ["to", "kind", "url"]);
        assert_eq!(required("SendText"), ["to", "kind", "text"]);
        for shape in [
            SendBody::Media(SendMedia {
                to: Phone("+7 701 570 55 55".into()),
                kind: MediaSendKind::Voice,
                url: "https://cdn.example.com/a.ogg".into(),
                caption: None,
                text: None,
                fallback_text: true,
            }),
            SendBody::Text(SendText {
                to: Phone("77015705555@s.whatsapp.net".into()),
                kind: TextSendKind::Text,
                text: "Hello!".into(),
                url: None,
                caption: None,
                fallback_text: false,
            }),
        ] {
            let json = serde_json::to_string(&shape).unwrap();
            let req: crate::sender::SendRequest = serde_json::from_str(&json).unwrap();
            assert!(crate::sender::normalize(&req.to).is_ok(), "{json}");
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_names_every_route() {
        let v: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        assert_eq!(v["openapi"], "3.1.0");
        for path in [
            "/api/v1/links",
            "/api/v1/links/{id}",
            "/api/v1/links/{id}/events",
            "/api/v1/send",
            "/api/v1/check",
            "/healthz",
            "/readyz",
        ] {
            assert!(v["paths"][path].is_object(), "{path} missing");
        }
    }
}
