//! Link kinds and media profiles (interim: replaced by the full policy module).
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Image,
    Audio,
    Voice,
    Any,
}
impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Audio => "audio",
            Kind::Voice => "voice",
            Kind::Any => "any",
        }
    }
}
impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "image" => Ok(Kind::Image),
            "audio" => Ok(Kind::Audio),
            "voice" => Ok(Kind::Voice),
            "any" => Ok(Kind::Any),
            _ => Err(format!("unknown kind `{s}`")),
        }
    }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Whatsapp,
    Any,
}
impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "whatsapp" => Ok(Profile::Whatsapp),
            "any" => Ok(Profile::Any),
            _ => Err(format!("unknown profile `{s}`")),
        }
    }
}
