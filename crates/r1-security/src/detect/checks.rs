//! The checksums that tell a real identifier from a number that merely looks like one.

/// Luhn (mod 10) over the digits of a payment card number.
pub fn luhn_ok(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = (d - b'0') as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// IBAN (ISO 13616): move the first four characters to the end, letters → 10..35, the number
/// mod 97 must be 1. `s` holds only ASCII letters and digits.
pub fn iban_ok(s: &[u8]) -> bool {
    if !(15..=34).contains(&s.len()) || !s[..2].iter().all(u8::is_ascii_uppercase) {
        return false;
    }
    if !s[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut rem = 0u32;
    for &c in s[4..].iter().chain(&s[..4]) {
        let v = match c {
            b'0'..=b'9' => (c - b'0') as u32,
            b'A'..=b'Z' => (c - b'A') as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// PRC resident identity number (GB 11643-1999): 17 digits, a check character (digit or X)
/// from the weighted sum mod 11, and a plausible birth date in digits 7-14.
pub fn prc_id_ok(s: &[u8]) -> bool {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    if s.len() != 18 || !s[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = s[..17]
        .iter()
        .zip(W)
        .map(|(&d, w)| (d - b'0') as u32 * w)
        .sum();
    if CHECK[(sum % 11) as usize] != s[17].to_ascii_uppercase() {
        return false;
    }
    let num =
        |r: std::ops::Range<usize>| s[r].iter().fold(0u32, |a, &d| a * 10 + (d - b'0') as u32);
    let (y, m, d) = (num(6..10), num(10..12), num(12..14));
    (1900..=2100).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d)
}

/// US Social Security number `AAA-GG-SSSS`: area not 000, 666 or 9xx; group not 00;
/// serial not 0000 (numbers never issued).
pub fn ssn_ok(s: &[u8]) -> bool {
    if s.len() != 11 || s[3] != b'-' || s[6] != b'-' {
        return false;
    }
    let (a, g, n) = (&s[..3], &s[4..6], &s[7..]);
    if ![a, g, n].iter().all(|p| p.iter().all(u8::is_ascii_digit)) {
        return false;
    }
    a != b"000" && a != b"666" && a[0] != b'9' && g != b"00" && n != b"0000"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_good_and_bad_values() {
        assert!(luhn_ok(b"4111111111111111"));
        assert!(luhn_ok(b"5555555555554444"));
        assert!(luhn_ok(b"378282246310005"));
        assert!(!luhn_ok(b"4111111111111112"));
        assert!(iban_ok(b"DE89370400440532013000"));
        assert!(iban_ok(b"GB82WEST12345698765432"));
        assert!(iban_ok(b"FR1420041010050500013M02606"));
        assert!(!iban_ok(b"DE89370400440532013001"));
        assert!(!iban_ok(b"XX00"));
        assert!(prc_id_ok(b"11010519491231002X"));
        assert!(!prc_id_ok(b"110105194912310029"));
        assert!(!prc_id_ok(b"11010519491331002X"), "month 13");
        assert!(ssn_ok(b"123-45-6789"));
        assert!(!ssn_ok(b"000-45-6789") && !ssn_ok(b"666-45-6789") && !ssn_ok(b"912-45-6789"));
        assert!(!ssn_ok(b"123-00-6789") && !ssn_ok(b"123-45-0000"));
    }
}
