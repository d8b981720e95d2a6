//! Base64 (RFC 4648): IAM etags, Secret data, JWT parts.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padded or not, decoded; `None` if it is not.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    decode_with(s, false)
}

/// Base64 in the standard or the URL-safe alphabet, padded or not, decoded; `None` if it
/// is not.
pub fn decode_any(s: &str) -> Option<Vec<u8>> {
    decode_with(s, true)
}

fn decode_with(s: &str, url_safe: bool) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'-' if url_safe => 62,
            b'_' if url_safe => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips() {
        for s in ["", "a", "ab", "abc", "hello world!"] {
            assert_eq!(
                super::decode(&super::encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(super::encode(b"ab"), "YWI=");
        assert_eq!(super::encode(b"abc"), "YWJj");
        assert_eq!(super::encode(b"secret"), "c2VjcmV0");
    }

    #[test]
    fn url_safe_only_when_asked() {
        assert_eq!(super::decode("-_8"), None);
        assert_eq!(
            super::decode_any("-_8").unwrap(),
            super::decode("+/8").unwrap()
        );
        assert_eq!(super::decode_any("YWI").unwrap(), b"ab");
        assert_eq!(super::decode("YW*"), None);
    }
}
