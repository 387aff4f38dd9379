//! Prefix scans as ranges: `key >= prefix AND key < successor(prefix)`, which
//! an index serves (unlike `LIKE`, which is also case-insensitive). SQLite
//! compares TEXT byte-wise, which for UTF-8 is code point order.

/// The smallest string greater than every string starting with `prefix`; `None`
/// when there is none (empty, or all `U+10FFFF`).
pub fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // Skips the surrogates, which are not chars.
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn successors_bound_the_prefix() {
        assert_eq!(successor(""), None);
        assert_eq!(successor("a/").as_deref(), Some("a0"));
        assert_eq!(successor("ab").as_deref(), Some("ac"));
        assert_eq!(successor("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(successor("\u{10FFFF}"), None);
        for key in ["a/", "a/b", "a/\u{10FFFF}", "a/\u{FFFF}z"] {
            assert!(key < successor("a/").unwrap().as_str());
        }
    }
}
