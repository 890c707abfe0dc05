//! Phone number → WhatsApp jid (`<digits>@s.whatsapp.net`), DESIGN §8.
//!
//! Owns only the parsing of what an operator types (`+7 (701) 570-55-55`,
//! `8 701 570 55 55`, `77015705555`, or a ready jid) into a [`Jid`] that the gateway
//! accepts. It does not ask the gateway whether the number is on WhatsApp; the gateway
//! answers that itself ("This number is not found on WhatsApp").
//!
//! Rules, in order:
//! - Surrounding whitespace is ignored; an empty input is refused.
//! - A ready jid is accepted only with the `s.whatsapp.net` domain (any case) and a
//!   local part of digits only; its digits are taken verbatim (no trunk rewrite), so
//!   `normalize(jid.as_str())` is the identity.
//! - Otherwise the input may hold digits, spaces, `(`, `)`, `-`, `.` and one leading
//!   `+`. Anything else (letters, a second `+`, `*`, ...) is refused rather than
//!   silently dropped: a typo must not turn into someone else's number.
//! - Trunk prefix: without a leading `+`, exactly 11 digits starting with `8` are read
//!   as the Kazakh/Russian national form (`8 701 ...` is dialled for `+7 701 ...`) and
//!   the `8` becomes `7`. With a `+` the digits are taken as international as written,
//!   so a real `+8x` number (Japan, China, ...) must be written with its `+` or as a jid.
//! - A number starting with `0` is a national number without country code (no E.164
//!   country code starts with 0): refused.
//! - 10 to 15 digits (E.164 allows at most 15). Ten digits are accepted as written;
//!   no country code is guessed for them.

use std::fmt;

use thiserror::Error;

/// The domain every person-to-person jid carries (DESIGN §8).
const DOMAIN: &str = "s.whatsapp.net";
const MIN_DIGITS: usize = 10;
const MAX_DIGITS: usize = 15;

/// A jid the gateway accepts: 10–15 digits (country code first) + `@s.whatsapp.net`.
/// Only [`normalize`] builds one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Jid(String);

impl Jid {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits before `@`, e.g. for logs or a `tel:` link.
    pub fn digits(&self) -> &str {
        // Invariant: built by `normalize` as "<digits>@s.whatsapp.net"; the fallback
        // is never taken.
        self.0.split_once('@').map_or(self.0.as_str(), |(d, _)| d)
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an input is not a phone number or jid. Always a usage error (CLI exit 2).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JidError {
    #[error("the phone number is empty")]
    Empty,
    #[error(
        "the phone number contains {0:?}; only digits, spaces, ( ) - . and a leading + are allowed"
    )]
    InvalidChar(char),
    #[error(
        "the phone number has {0} digits; at least {MIN_DIGITS} with the country code are needed"
    )]
    TooShort(usize),
    #[error("the phone number has {0} digits; at most {MAX_DIGITS} are allowed (E.164)")]
    TooLong(usize),
    #[error("the phone number starts with 0: write it with its country code")]
    LeadingZero,
    #[error("only person jids (@{DOMAIN}) are supported, not @{0}")]
    UnsupportedDomain(String),
}

/// Parses a phone number or jid as the module doc describes.
pub fn normalize(input: &str) -> Result<Jid, JidError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(JidError::Empty);
    }
    if let Some((local, domain)) = input.split_once('@') {
        if !domain.eq_ignore_ascii_case(DOMAIN) {
            return Err(JidError::UnsupportedDomain(domain.to_owned()));
        }
        if let Some(c) = local.chars().find(|c| !c.is_ascii_digit()) {
            return Err(JidError::InvalidChar(c));
        }
        return from_digits(local.to_owned());
    }

    let (international, rest) = match input.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '(' | ')' | '-' | '.' => {}
            other => return Err(JidError::InvalidChar(other)),
        }
    }
    if !international && digits.len() == 11 && digits.starts_with('8') {
        // Kazakh/Russian trunk prefix: "8 701 ..." is the national spelling of "+7 701 ...".
        digits.replace_range(0..1, "7");
    }
    from_digits(digits)
}

fn from_digits(digits: String) -> Result<Jid, JidError> {
    match digits.len() {
        0 => Err(JidError::Empty),
        n if n < MIN_DIGITS => Err(JidError::TooShort(n)),
        n if n > MAX_DIGITS => Err(JidError::TooLong(n)),
        _ if digits.starts_with('0') => Err(JidError::LeadingZero),
        _ => Ok(Jid(format!("{digits}@{DOMAIN}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KZ: &str = "77015705555@s.whatsapp.net";

    #[test]
    fn accepted_spellings_of_one_kazakh_number() {
        for input in [
            "+7 (701) 570-55-55",
            "8 701 570 55 55",
            "8(701)570-55-55",
            "77015705555",
            "+77015705555",
            "7.701.570.55.55",
            "  77015705555  ",
            "77015705555@s.whatsapp.net",
            "77015705555@S.WhatsApp.Net",
        ] {
            assert_eq!(normalize(input).map(|j| j.0), Ok(KZ.to_owned()), "{input}");
        }
    }

    #[test]
    fn international_numbers_keep_their_digits() {
        assert_eq!(
            normalize("+44 20 7946 0958").unwrap().as_str(),
            "442079460958@s.whatsapp.net"
        );
        // With '+', a leading 8 is a country code, not a trunk prefix.
        assert_eq!(
            normalize("+81 3 1234 5678").unwrap().as_str(),
            "81312345678@s.whatsapp.net"
        );
        // A jid's digits are taken verbatim too.
        assert_eq!(
            normalize("87015705555@s.whatsapp.net").unwrap().digits(),
            "87015705555"
        );
    }

    #[test]
    fn refused_inputs() {
        let cases: &[(&str, JidError)] = &[
            ("", JidError::Empty),
            ("   ", JidError::Empty),
            ("+", JidError::Empty),
            ("@s.whatsapp.net", JidError::Empty),
            ("701 570 55", JidError::TooShort(8)),
            ("1234567890123456", JidError::TooLong(16)),
            ("7701570555a", JidError::InvalidChar('a')),
            ("call 77015705555", JidError::InvalidChar('c')),
            ("+7+7015705555", JidError::InvalidChar('+')),
            ("77015705555 ext 2", JidError::InvalidChar('e')),
            ("0701 570 55 55", JidError::LeadingZero),
            ("7701 570@s.whatsapp.net", JidError::InvalidChar(' ')),
            ("120363@g.us", JidError::UnsupportedDomain("g.us".into())),
            (
                "77015705555@c.us",
                JidError::UnsupportedDomain("c.us".into()),
            ),
            ("٧٧٠١٥٧٠٥٥٥٥", JidError::InvalidChar('٧')),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_ref(), Err(want), "{input:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_is_idempotent(input in any::<String>()) {
            if let Ok(jid) = normalize(&input) {
                prop_assert_eq!(normalize(jid.as_str()), Ok(jid.clone()));
                prop_assert!(jid.as_str().ends_with("@s.whatsapp.net"));
                let n = jid.digits().len();
                prop_assert!((MIN_DIGITS..=MAX_DIGITS).contains(&n));
            }
        }

        #[test]
        fn phone_like_inputs_never_panic(input in "[+]?[0-9 ()\\-.]{0,24}(@s\\.whatsapp\\.net)?") {
            if let Ok(jid) = normalize(&input) {
                prop_assert_eq!(normalize(jid.as_str()), Ok(jid.clone()));
            }
        }

        #[test]
        fn international_digits_pass_through(digits in "[1-9][0-9]{9,14}") {
            let jid = normalize(&format!("+{digits}")).unwrap();
            prop_assert_eq!(jid.digits(), digits.as_str());
        }
    }
}
