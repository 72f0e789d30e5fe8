use super::*;

fn cats(text: &str) -> Vec<(Category, &str)> {
    Detector
        .find(text)
        .into_iter()
        .map(|f| (f.category, &text[f.start..f.end]))
        .collect()
}

#[test]
fn finds_each_category() {
    let cases: &[(&str, Category, &str)] = &[
        (
            "mail bob.smith+x@example.co.uk now",
            Category::Email,
            "bob.smith+x@example.co.uk",
        ),
        (
            "call (415) 555-2671 today",
            Category::Phone,
            "(415) 555-2671",
        ),
        ("or +44 20 7946 0958.", Category::Phone, "+44 20 7946 0958"),
        ("ssn 123-45-6789.", Category::UsSsn, "123-45-6789"),
        (
            "card 4111 1111 1111 1111 ok",
            Category::PaymentCard,
            "4111 1111 1111 1111",
        ),
        (
            "card 5555-5555-5555-4444",
            Category::PaymentCard,
            "5555-5555-5555-4444",
        ),
        (
            "iban DE89 3704 0044 0532 0130 00 Thanks",
            Category::Iban,
            "DE89 3704 0044 0532 0130 00",
        ),
        (
            "iban GB82WEST12345698765432.",
            Category::Iban,
            "GB82WEST12345698765432",
        ),
        (
            "id 11010519491231002X here",
            Category::PrcResidentId,
            "11010519491231002X",
        ),
        (
            "host 192.168.10.254, up",
            Category::IpAddress,
            "192.168.10.254",
        ),
        (
            "v6 2001:db8::8a2e:370:7334 up",
            Category::IpAddress,
            "2001:db8::8a2e:370:7334",
        ),
        ("loopback ::1.", Category::IpAddress, "::1"),
        (
            "key sk-abcdefghijklmnopqrstuvwxyz123456 x",
            Category::Secret,
            "sk-abcdefghijklmnopqrstuvwxyz123456",
        ),
        (
            "aws AKIAIOSFODNN7EXAMPLE",
            Category::Secret,
            "AKIAIOSFODNN7EXAMPLE",
        ),
        (
            "password = hunter2hunter2hunter2",
            Category::Secret,
            "password = hunter2hunter2hunter2",
        ),
    ];
    for (text, cat, want) in cases {
        assert_eq!(cats(text), vec![(*cat, *want)], "in {text:?}");
    }
}

#[test]
fn numbers_failing_checksums_are_left_alone() {
    for text in [
        "order 4111 1111 1111 1112 shipped", // Luhn fails
        "ts 1732743740123456",               // 16 digits, Luhn fails
        "DE89 3704 0044 0532 0130 01",       // IBAN mod 97 fails
        "id 110105194912310021",             // PRC check digit wrong
        "ssn 000-12-3456 and 666-12-3456",   // never issued
        "version 1.2.3.4.5 and 300.1.1.1",   // dotted numbers, not IPs
        "at 12:30:45 on 2024-11-27",         // time and date
        "deadbeef cafe:babe",                // hex words
        "pi is 3.14159265358979",            // a float
    ] {
        assert_eq!(cats(text), vec![], "in {text:?}");
        assert_eq!(Detector.redact(text).0, text);
    }
}

#[test]
fn redact_replaces_and_scores() {
    let (out, found) = Detector.redact("write to a@b.io or pay 4111111111111111");
    assert_eq!(
        out,
        "write to [REDACTED:EMAIL] or pay [REDACTED:PAYMENT_CARD]"
    );
    let c: Vec<Category> = found.iter().map(|f| f.category).collect();
    assert_eq!(score(&c), 0.94);
    assert_eq!(score(&[]), 0.0);
}

/// Every way of cutting the text into two or three pieces gives the same output as
/// redacting it whole, and the same findings.
#[test]
fn stream_catches_patterns_split_across_pieces() {
    let text = "Reach me at jane.doe@example.com or 4111 1111 1111 1111; \
                IBAN GB82 WEST 1234 5698 7654 32, ip 10.0.0.7. Thanks! 身份证 11010519491231002X 完";
    let (whole, found) = Detector.redact(text);
    assert_eq!(found.len(), 5, "{whole}");
    let bounds: Vec<usize> = (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect();
    for &i in &bounds {
        for &j in bounds.iter().filter(|&&j| j >= i).step_by(7) {
            let mut r = StreamRedactor::new(true);
            let mut out = r.push(&text[..i]);
            out += &r.push(&text[i..j]);
            out += &r.push(&text[j..]);
            out += &r.finish();
            assert_eq!(out, whole, "split at {i}, {j}");
            assert_eq!(r.found().len(), 5);
        }
    }
}

#[test]
fn stream_token_by_token_and_bounded() {
    let text = "a@b.co ".repeat(50) + &"x".repeat(1000);
    let mut r = StreamRedactor::new(true);
    let mut out = String::new();
    let mut max_held = 0;
    let mut fed = 0;
    for ch in text.chars() {
        out += &r.push(&ch.to_string());
        fed += ch.len_utf8();
        max_held = max_held.max(fed - out.len().min(fed));
    }
    out += &r.finish();
    assert_eq!(out, Detector.redact(&text).0);
    assert_eq!(r.found().len(), 50);
    // Releases keep up: at the end of the plain tail at most HOLD_BACK bytes were pending.
    let mut r = StreamRedactor::new(true);
    let mut got = 0;
    for _ in 0..1000 {
        got += r.push("y").len();
    }
    assert_eq!(got, 1000 - HOLD_BACK);
}

#[test]
fn flag_mode_keeps_text() {
    let mut r = StreamRedactor::new(false);
    let mut out = r.push("mail x@y.org and ");
    out += &r.push("123-45-6789");
    out += &r.finish();
    assert_eq!(out, "mail x@y.org and 123-45-6789");
    assert_eq!(r.found(), &[Category::Email, Category::UsSsn]);
}
