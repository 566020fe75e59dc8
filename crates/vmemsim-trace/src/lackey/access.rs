//! Access lines (`I  addr,size`, ` L|S|M addr,size`): the one-pass parser
//! and the general one it falls back to.

use super::bytes::{parse_dec, parse_hex, trim, trim_start};
use crate::{Access, AccessKind};

/// Value of each byte as a hex digit; [`NOT_HEX`] for other bytes.
pub(super) const HEX_DIGIT: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};
/// Bytes [`LineParser::parse_access_lines`](super::LineParser::parse_access_lines)
/// needs in view to parse a line without bounds checks per byte: the longest
/// line it accepts (kind, 8 spaces, 16 hex digits, comma, 5 digits, newline:
/// 34 bytes) with room.
pub const FAST_WINDOW: usize = 48;
/// Marks a byte that is no hex digit in [`HEX_DIGIT`].
pub(super) const NOT_HEX: u8 = 0xff;

/// Parse `addr,size` after the kind letter (leading spaces allowed).
///
/// One pass over the bytes for the lines Valgrind writes (spaces, 1 to 16
/// hex digits, a comma, 1 to 5 decimal digits); anything else goes
/// through [`parse_access_general`], which gives the same result (a test
/// checks it) and the error.
#[inline]
pub(super) fn parse_access(s: &[u8], kind: AccessKind, pid: u32) -> Result<Access, &'static str> {
    let mut i = 0;
    while i < s.len() && s[i] == b' ' {
        i += 1;
    }
    let digits = i;
    let mut addr = 0u64;
    while i < s.len() {
        let d = HEX_DIGIT[usize::from(s[i])];
        if d == NOT_HEX {
            break;
        }
        addr = (addr << 4) | u64::from(d);
        i += 1;
    }
    let hex_len = i - digits;
    if (1..=16).contains(&hex_len) && s.get(i) == Some(&b',') {
        let size_digits = &s[i + 1..];
        if (1..=5).contains(&size_digits.len()) {
            let mut size = 0u32;
            let mut ok = true;
            for &b in size_digits {
                ok &= b.is_ascii_digit();
                size = size * 10 + u32::from(b.wrapping_sub(b'0'));
            }
            if ok {
                if let Ok(size) = u16::try_from(size) {
                    return Ok(Access {
                        addr,
                        pid,
                        size,
                        kind,
                    });
                }
            }
        }
    }
    parse_access_general(s, kind, pid)
}

/// [`parse_access`] for any input: whitespace around the size, errors.
fn parse_access_general(s: &[u8], kind: AccessKind, pid: u32) -> Result<Access, &'static str> {
    const EXPECTED: &str = "expected `hexaddr,size` after the access kind (size 1 to 65535)";
    let s = trim_start(s);
    let comma = s.iter().position(|&b| b == b',').ok_or(EXPECTED)?;
    let addr = parse_hex(&s[..comma]).ok_or(EXPECTED)?;
    let size = parse_dec(trim(&s[comma + 1..])).ok_or(EXPECTED)?;
    let size = u16::try_from(size).map_err(|_| EXPECTED)?;
    Ok(Access {
        addr,
        pid,
        size,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_pass_access_parser_agrees_with_the_general_one() {
        // Lines as Valgrind writes them, and the edges of the fast path:
        // 16 hex digits, 17 (too many), size 65535 and 65536, 5 and 6
        // size digits, whitespace the fast path leaves to the general one.
        let cases: &[&[u8]] = &[
            b"  04016a8,3",
            b" 1ffefffd58,8",
            b"ffffffffffffffff,64",
            b"1ffffffffffffffff,8",
            b" 10,65535",
            b" 10,65536",
            b" 10,00008",
            b" 10,000008",
            b" 10, 8 ",
            b"\t10,8",
            b" 10 ,8",
            b" 0x10,8",
            b" 10,",
            b" ,8",
            b"",
            b" AbC,1",
            b" 10,8x",
        ];
        for c in cases {
            assert_eq!(
                parse_access(c, AccessKind::Load, 3),
                parse_access_general(c, AccessKind::Load, 3),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
        assert_eq!(
            parse_access(b"  04016a8,3", AccessKind::Fetch, 3),
            Ok(Access {
                addr: 0x4016a8,
                pid: 3,
                size: 3,
                kind: AccessKind::Fetch
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_access_parser_agrees_on_any_bytes(
            line in proptest::collection::vec(
                proptest::sample::select(b" \t0123456789abcdefABCDEFxg,-".to_vec()),
                0..28,
            )
        ) {
            proptest::prop_assert_eq!(
                parse_access(&line, AccessKind::Store, 9),
                parse_access_general(&line, AccessKind::Store, 9)
            );
        }
    }
}
