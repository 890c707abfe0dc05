//! `Range` header parsing for one byte range (RFC 9110 §14). Multi-range requests are
//! answered with the whole body, which the RFC allows and no media client needs more.

/// What to send for a request's `Range` header, given the media's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReq {
    /// No usable range: the whole body, `200`.
    Full,
    /// Bytes `start..=end`, `206`.
    Partial { start: u64, end: u64 },
    /// A valid range outside the body: `416`.
    Unsatisfiable,
}

pub fn parse(header: Option<&str>, len: u64) -> RangeReq {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(b) {
            Some(0) => RangeReq::Unsatisfiable,
            Some(n) if len > 0 => RangeReq::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            Some(_) => RangeReq::Unsatisfiable,
            None => RangeReq::Full,
        },
        // bytes=A-: from A to the end.
        (false, true) => match num(a) {
            Some(start) if start < len => RangeReq::Partial {
                start,
                end: len - 1,
            },
            Some(_) => RangeReq::Unsatisfiable,
            None => RangeReq::Full,
        },
        (false, false) => match (num(a), num(b)) {
            // A last position before the first is syntactically invalid: ignore it.
            (Some(start), Some(end)) if end < start => RangeReq::Full,
            (Some(start), Some(_)) if start >= len => RangeReq::Unsatisfiable,
            (Some(start), Some(end)) => RangeReq::Partial {
                start,
                end: end.min(len - 1),
            },
            _ => RangeReq::Full,
        },
        (true, true) => RangeReq::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeReq::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let cases: &[(Option<&str>, u64, RangeReq)] = &[
            (None, 10, Full),
            (Some("bytes=0-99"), 1000, Partial { start: 0, end: 99 }),
            (Some("bytes=0-99"), 50, Partial { start: 0, end: 49 }),
            (Some("bytes=10-"), 50, Partial { start: 10, end: 49 }),
            (Some("bytes=-10"), 50, Partial { start: 40, end: 49 }),
            (Some("bytes=-100"), 50, Partial { start: 0, end: 49 }),
            (Some("bytes=-0"), 50, Unsatisfiable),
            (Some("bytes=50-"), 50, Unsatisfiable),
            (Some("bytes=60-70"), 50, Unsatisfiable),
            (Some("bytes=0-0"), 0, Unsatisfiable),
            (Some("bytes=9-3"), 50, Full),
            (Some("bytes=0-1,5-6"), 50, Full),
            (Some("items=0-1"), 50, Full),
            (Some("bytes=a-b"), 50, Full),
            (Some("bytes=-"), 50, Full),
            (Some("bytes=+1-2"), 50, Full),
            (Some("bytes=99999999999999999999999-"), 50, Full),
        ];
        for (h, len, want) in cases {
            assert_eq!(parse(*h, *len), *want, "{h:?} len {len}");
        }
    }

    proptest! {
        #[test]
        fn partial_ranges_are_always_inside_the_body(h in "\\PC{0,40}", len in 0u64..10_000) {
            if let Partial { start, end } = parse(Some(&h), len) {
                prop_assert!(start <= end && end < len);
            }
        }

        // Lengths over the whole u64 range, as fuzz/fuzz_targets/range.rs feeds them.
        #[test]
        fn partial_ranges_are_inside_any_length(
            a in any::<u64>(), b in any::<u64>(), len in any::<u64>(), form in 0..3usize,
        ) {
            let h = match form {
                0 => format!("bytes={a}-{b}"),
                1 => format!("bytes={a}-"),
                _ => format!("bytes=-{b}"),
            };
            if let Partial { start, end } = parse(Some(&h), len) {
                prop_assert!(start <= end && end < len, "{} len {}", h, len);
            }
            prop_assert_eq!(parse(None, len), Full);
        }

        #[test]
        fn well_formed_ranges_round_trip(len in 1u64..1_000_000, a in 0u64..1_000_000, n in 0u64..1_000_000) {
            let h = format!("bytes={a}-{}", a + n);
            match parse(Some(&h), len) {
                Partial { start, end } => prop_assert!(start == a && end == (a + n).min(len - 1)),
                Unsatisfiable => prop_assert!(a >= len),
                Full => prop_assert!(false, "well-formed range ignored"),
            }
        }
    }
}
