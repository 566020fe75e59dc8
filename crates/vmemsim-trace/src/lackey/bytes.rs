//! Small byte-string helpers: numbers, search, trimming.

#[inline]
pub(super) fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

#[inline]
pub(super) fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v = 0u64;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

pub(super) fn parse_signed(s: &[u8]) -> Option<i32> {
    match s.strip_prefix(b"-") {
        Some(d) => parse_dec(d).and_then(|v| i32::try_from(v).ok()).map(|v| -v),
        None => parse_dec(s).and_then(|v| i32::try_from(v).ok()),
    }
}

/// `0x` hex or decimal.
pub(super) fn parse_num(s: &[u8]) -> Option<u64> {
    match s.strip_prefix(b"0x") {
        Some(h) => parse_hex(h),
        None => parse_dec(s),
    }
}

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(super) fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

pub(super) fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let n = s
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    &s[..s.len() - n]
}
