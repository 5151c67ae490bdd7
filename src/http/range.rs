//! Reading a `Range` header (one range of bytes; anything else is served whole, as RFC 9110
//! allows) and writing a `Content-Disposition` for a name.

/// What a `Range` header asks of a body of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsked {
    /// No range, or one this server serves whole (several ranges, another unit, bad syntax).
    Whole,
    /// Bytes `from..to` (end exclusive), within the body.
    Part(u64, u64),
    /// A range that starts past the end: 416.
    Unsatisfiable,
}

/// The range `header` asks of a body of `size` bytes.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAsked {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAsked::Whole;
    };
    if spec.contains(',') {
        return RangeAsked::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsked::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `-N`: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => RangeAsked::Unsatisfiable,
            Some(_) if size == 0 => RangeAsked::Unsatisfiable,
            Some(n) => RangeAsked::Part(size - n.min(size), size),
            None => RangeAsked::Whole,
        },
        // `A-`: from A to the end.
        (false, true) => match number(first) {
            Some(a) if a >= size => RangeAsked::Unsatisfiable,
            Some(a) => RangeAsked::Part(a, size),
            None => RangeAsked::Whole,
        },
        // `A-B`, B inclusive.
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a > b => RangeAsked::Whole,
            (Some(a), Some(_)) if a >= size => RangeAsked::Unsatisfiable,
            (Some(a), Some(b)) => RangeAsked::Part(a, b.saturating_add(1).min(size)),
            _ => RangeAsked::Whole,
        },
        (true, true) => RangeAsked::Whole,
    }
}

/// `attachment` with the name's last component as the file name: a plain ASCII fallback
/// and the exact name percent-encoded (RFC 6266).
pub fn content_disposition(name: &str) -> String {
    let last = name
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("download");
    let plain: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in last.bytes() {
        if byte.is_ascii_alphanumeric() || b"._-".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeAsked::*;

    #[test]
    fn one_range_of_bytes_is_read_and_clipped_to_the_body() {
        let r = |h: &str| parse_range(Some(h), 100);
        assert_eq!(r("bytes=0-9"), Part(0, 10));
        assert_eq!(r("bytes=90-"), Part(90, 100));
        assert_eq!(r("bytes=-10"), Part(90, 100));
        assert_eq!(r("bytes=-1000"), Part(0, 100));
        assert_eq!(r("bytes=50-1000"), Part(50, 100));
        assert_eq!(r("bytes=99-99"), Part(99, 100));
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable_and_others_are_served_whole() {
        let r = |h: &str| parse_range(Some(h), 100);
        assert_eq!(r("bytes=100-"), Unsatisfiable);
        assert_eq!(r("bytes=100-200"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-5"), 0), Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), Whole);
        assert_eq!(r("items=0-1"), Whole);
        assert_eq!(r("bytes=9-1"), Whole);
        assert_eq!(r("bytes=a-b"), Whole);
        assert_eq!(r("bytes=+1-2"), Whole);
        assert_eq!(r("bytes=-"), Whole);
        assert_eq!(parse_range(None, 100), Whole);
    }

    #[test]
    fn a_disposition_names_the_last_component_safely() {
        assert_eq!(
            content_disposition("docs/report.pdf"),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        let odd = content_disposition("a/\"x\";\r\né.txt");
        assert!(odd.starts_with("attachment; filename=\"_x____"), "{odd}");
        assert!(odd.contains("%C3%A9.txt"), "{odd}");
        assert!(!odd.contains('\r') && !odd.contains('\n'));
    }
}
