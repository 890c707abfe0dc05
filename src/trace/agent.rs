//! Who fetched a short link, from its `User-Agent`: the gateway's media fetcher, a
//! link-preview bot, a browser, or something else. A guess from a client-controlled
//! header, good enough to read a trace by, never used for a decision.
//!
//! The gateway (ChatFlow) fetches media with Baileys, which downloads through axios
//! (or node-fetch / undici in other builds) with their default user agents, or
//! names itself. `WhatsApp/2.x` is WhatsApp's *link preview* (a phone rendering a
//! link in a text message, e.g. the text fallback), so it counts as a preview bot.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientClass {
    /// The messaging gateway's media fetcher (Baileys and its HTTP clients).
    Gateway,
    /// A link-preview fetcher (WhatsApp, Facebook, Twitter/X, Telegram, Slack, ...).
    PreviewBot,
    Browser,
    Other,
}

/// (substring of the lower-cased user agent, class, name shown). First match wins,
/// so the specific names come before the generic ones ("Mozilla" last).
const TABLE: &[(&str, ClientClass, &str)] = &[
    ("baileys", ClientClass::Gateway, "Baileys"),
    ("chatflow", ClientClass::Gateway, "ChatFlow"),
    ("axios/", ClientClass::Gateway, "Baileys (axios)"),
    ("node-fetch", ClientClass::Gateway, "Baileys (node-fetch)"),
    ("undici", ClientClass::Gateway, "Baileys (undici)"),
    (
        "whatsapp/",
        ClientClass::PreviewBot,
        "WhatsApp link preview",
    ),
    ("facebookexternalhit", ClientClass::PreviewBot, "Facebook"),
    ("facebookcatalog", ClientClass::PreviewBot, "Facebook"),
    // Telegram's agent says "like TwitterBot": it must come first.
    ("telegrambot", ClientClass::PreviewBot, "Telegram"),
    ("twitterbot", ClientClass::PreviewBot, "Twitter/X"),
    ("slackbot", ClientClass::PreviewBot, "Slack"),
    ("slack-imgproxy", ClientClass::PreviewBot, "Slack"),
    ("discordbot", ClientClass::PreviewBot, "Discord"),
    ("linkedinbot", ClientClass::PreviewBot, "LinkedIn"),
    ("skypeuripreview", ClientClass::PreviewBot, "Skype"),
    ("viber", ClientClass::PreviewBot, "Viber"),
    ("vkshare", ClientClass::PreviewBot, "VK"),
    ("googlebot", ClientClass::PreviewBot, "Google"),
    ("bingbot", ClientClass::PreviewBot, "Bing"),
    ("headlesschrome", ClientClass::Browser, "Headless Chrome"),
    ("firefox/", ClientClass::Browser, "Firefox"),
    ("edg/", ClientClass::Browser, "Edge"),
    ("chrome/", ClientClass::Browser, "Chrome"),
    ("safari/", ClientClass::Browser, "Safari"),
    ("curl/", ClientClass::Other, "curl"),
    ("wget/", ClientClass::Other, "Wget"),
    ("medialink/", ClientClass::Other, "medialink"),
    ("mozilla/", ClientClass::Browser, "Browser"),
];

/// The class of a user agent and, when recognised, the fetcher's name.
pub fn classify(user_agent: Option<&str>) -> (ClientClass, Option<&'static str>) {
    let Some(ua) = user_agent.map(str::trim).filter(|u| !u.is_empty()) else {
        return (ClientClass::Other, None);
    };
    let lower = ua.to_ascii_lowercase();
    TABLE
        .iter()
        .find(|(needle, _, _)| lower.contains(needle))
        .map_or((ClientClass::Other, None), |&(_, class, name)| {
            (class, Some(name))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_known_fetcher_is_named() {
        use ClientClass::*;
        let cases = [
            ("axios/1.7.9", Gateway, Some("Baileys (axios)")),
            ("Baileys/6.7", Gateway, Some("Baileys")),
            (
                "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
                Gateway,
                Some("Baileys (node-fetch)"),
            ),
            (
                "WhatsApp/2.23.20.0 A",
                PreviewBot,
                Some("WhatsApp link preview"),
            ),
            (
                "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
                PreviewBot,
                Some("Facebook"),
            ),
            ("Twitterbot/1.0", PreviewBot, Some("Twitter/X")),
            (
                "TelegramBot (like TwitterBot)",
                PreviewBot,
                Some("Telegram"),
            ),
            (
                "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
                PreviewBot,
                Some("Slack"),
            ),
            (
                "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
                PreviewBot,
                Some("Discord"),
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36",
                Browser,
                Some("Headless Chrome"),
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0",
                Browser,
                Some("Firefox"),
            ),
            ("curl/8.5.0", Other, Some("curl")),
            ("something-else", Other, None),
            ("", Other, None),
        ];
        for (ua, class, name) in cases {
            assert_eq!(classify(Some(ua)), (class, name), "{ua}");
        }
        assert_eq!(classify(None), (Other, None));
    }
}
