//! Sensitive-data detection: find e-mail addresses, phone numbers, US SSNs, payment cards
//! (Luhn), IBANs (mod 97), PRC resident IDs (check digit), IP addresses and API-key-like
//! secrets in text; score what was found; replace it (redact mode).
//!
//! Candidates come from regular expressions; identifiers with a checksum only count when the
//! checksum holds, so ordinary numbers (order ids, timestamps) are left alone. Where two
//! candidates overlap the more specific category wins.

mod checks;
mod stream;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

pub use checks::{iban_ok, luhn_ok, prc_id_ok, ssn_ok};
pub use stream::{StreamRedactor, HOLD_BACK};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    // In priority order: the first wins an overlap.
    Secret,
    PrcResidentId,
    PaymentCard,
    Iban,
    UsSsn,
    Email,
    IpAddress,
    Phone,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Secret => "secret",
            Category::PrcResidentId => "prc_resident_id",
            Category::PaymentCard => "payment_card",
            Category::Iban => "iban",
            Category::UsSsn => "us_ssn",
            Category::Email => "email",
            Category::IpAddress => "ip_address",
            Category::Phone => "phone",
        }
    }

    /// How sensitive one finding is (0..1); see [`score`].
    pub fn weight(self) -> f64 {
        match self {
            Category::Secret => 0.95,
            Category::PrcResidentId | Category::PaymentCard | Category::UsSsn => 0.9,
            Category::Iban => 0.8,
            Category::Email | Category::Phone => 0.4,
            Category::IpAddress => 0.2,
        }
    }

    /// The text that replaces a finding in redact mode.
    pub fn placeholder(self) -> String {
        format!("[REDACTED:{}]", self.as_str().to_ascii_uppercase())
    }
}

/// What to do with sensitive data in outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedactMode {
    /// No detection.
    #[default]
    Off,
    /// Detect and report (audit log, header); the text is unchanged.
    Flag,
    /// Detect, report, and replace each finding with `[REDACTED:CATEGORY]`.
    Redact,
}

impl std::str::FromStr for RedactMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(RedactMode::Off),
            "flag" => Ok(RedactMode::Flag),
            "redact" => Ok(RedactMode::Redact),
            _ => Err(format!("`{s}`: expected off, flag or redact")),
        }
    }
}

/// One finding: a byte range of the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub category: Category,
    pub start: usize,
    pub end: usize,
}

/// The combined score of findings: 1 − Π(1 − weight), so one card number scores 0.9, an
/// e-mail 0.4, both 0.94; nothing found scores 0.
pub fn score<'a>(categories: impl IntoIterator<Item = &'a Category>) -> f64 {
    let keep: f64 = categories.into_iter().map(|c| 1.0 - c.weight()).product();
    ((1.0 - keep) * 1000.0).round() / 1000.0
}

struct Patterns {
    secret: Regex,
    email: Regex,
    ssn: Regex,
    digits: Regex,
    iban: Regex,
    ipv4: Regex,
    ipv6: Regex,
    phone: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let re = |s: &str| Regex::new(s).expect("detector pattern compiles");
        Patterns {
            secret: re(concat!(
                r"sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,100}",
                r"|r1k_[0-9a-f]{12}_[0-9a-f]{64}",
                r"|(?:AKIA|ASIA)[0-9A-Z]{16}",
                r"|gh[pousr]_[A-Za-z0-9]{36,80}",
                r"|github_pat_[A-Za-z0-9_]{40,90}",
                r"|xox[abprs]-[A-Za-z0-9\-]{10,80}",
                r"|AIza[0-9A-Za-z_\-]{35}",
                r"|hf_[A-Za-z0-9]{30,40}",
                r"|-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----",
                r"|(?i:api[_\-]?key|secret[_\-]?key|access[_\-]?token|password|passwd)",
                r#"["']?\s*[:=]\s*["']?[A-Za-z0-9_\-/+=.]{12,100}"#,
            )),
            email: re(r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){0,6}\.[A-Za-z]{2,24}"),
            ssn: re(r"[0-9]{3}-[0-9]{2}-[0-9]{4}"),
            // Cards and PRC ids: 13-19 digits, optionally grouped by single spaces or dashes.
            digits: re(r"[0-9](?:[ \-]?[0-9]){12,18}[Xx]?"),
            iban: re(r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,32}"),
            ipv4: re(r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}"),
            ipv6: re(r"[0-9A-Fa-f:][0-9A-Fa-f:.]{1,44}(?:%[A-Za-z0-9]{1,16})?"),
            phone: re(concat!(
                r"\+[0-9]{1,3}(?:[ .\-]?\(?[0-9]{1,5}\)?){2,5}",
                r"|\(?[0-9]{3}\)?[ .\-][0-9]{3}[ .\-][0-9]{4}",
            )),
        }
    })
}

/// Whether the byte before `start` and the byte at `end` let a match stand on its own (not
/// the middle of a longer word or number).
fn isolated(text: &str, start: usize, end: usize, glue: impl Fn(u8) -> bool) -> bool {
    let b = text.as_bytes();
    let before_ok = start == 0 || !glue(b[start - 1]);
    let after_ok = end >= b.len() || !glue(b[end]);
    before_ok && after_ok
}

fn alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The stateless detector (patterns are compiled once per process).
#[derive(Clone, Copy, Debug, Default)]
pub struct Detector;

impl Detector {
    /// Every finding in `text`, non-overlapping, in text order.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let p = patterns();
        let mut cands: Vec<Finding> = Vec::new();
        let mut push = |category, start, end| {
            cands.push(Finding {
                category,
                start,
                end,
            })
        };
        for m in p.secret.find_iter(text) {
            if isolated(text, m.start(), m.end(), alnum) {
                push(Category::Secret, m.start(), m.end());
            }
        }
        for m in p.email.find_iter(text) {
            push(Category::Email, m.start(), m.end());
        }
        for m in p.ssn.find_iter(text) {
            let digit_glue = |c: u8| c.is_ascii_digit() || c == b'-';
            if isolated(text, m.start(), m.end(), digit_glue) && ssn_ok(m.as_str().as_bytes()) {
                push(Category::UsSsn, m.start(), m.end());
            }
        }
        for m in p.digits.find_iter(text) {
            digit_runs(text, m.start(), m.end(), &mut push);
        }
        for m in p.iban.find_iter(text) {
            iban_prefixes(text, m.start(), m.end(), &mut push);
        }
        let b = text.as_bytes();
        for m in p.ipv4.find_iter(text) {
            // Not part of a longer dotted number (versions, OIDs).
            let before_ok =
                m.start() == 0 || !(alnum(b[m.start() - 1]) || b[m.start() - 1] == b'.');
            let after_ok = m.end() >= b.len()
                || !(alnum(b[m.end()])
                    || b[m.end()] == b'.' && b.get(m.end() + 1).is_some_and(u8::is_ascii_digit));
            if before_ok && after_ok && m.as_str().parse::<Ipv4Addr>().is_ok() {
                push(Category::IpAddress, m.start(), m.end());
            }
        }
        for m in p.ipv6.find_iter(text) {
            let s = m.as_str().trim_end_matches(['.', ':']);
            let s = s.split('%').next().unwrap_or(s);
            let end = m.start() + s.len();
            if s.matches(':').count() >= 2
                && isolated(text, m.start(), end, alnum)
                && s.parse::<Ipv6Addr>().is_ok()
            {
                push(Category::IpAddress, m.start(), end);
            }
        }
        for m in p.phone.find_iter(text) {
            let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
            if (7..=15).contains(&digits)
                && isolated(text, m.start(), m.end(), |c| alnum(c) || c == b'+')
            {
                push(Category::Phone, m.start(), m.end());
            }
        }
        resolve_overlaps(cands)
    }

    /// Replace every finding with its placeholder.
    pub fn redact(&self, text: &str) -> (String, Vec<Finding>) {
        let found = self.find(text);
        (replace(text, &found), found)
    }
}

/// `text` with each finding replaced by its placeholder.
pub fn replace(text: &str, found: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in found {
        out.push_str(&text[at..f.start]);
        out.push_str(&f.category.placeholder());
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

/// A run of 13-19 digits (maybe grouped): a payment card if Luhn holds, a PRC resident id if
/// its check character does.
fn digit_runs(text: &str, start: usize, end: usize, push: &mut impl FnMut(Category, usize, usize)) {
    let glue = |c: u8| c.is_ascii_alphanumeric();
    if !isolated(text, start, end, glue) {
        return;
    }
    let raw = &text.as_bytes()[start..end];
    let compact: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    if prc_id_ok(&compact) && raw.len() == 18 {
        push(Category::PrcResidentId, start, end);
    } else if compact.iter().all(u8::is_ascii_digit)
        && (13..=19).contains(&compact.len())
        && luhn_ok(&compact)
    {
        push(Category::PaymentCard, start, end);
    }
}

/// The regex takes as many 4-character groups as it can, which may swallow a following
/// capitalised word; try each shorter end at a group boundary until the checksum holds.
fn iban_prefixes(
    text: &str,
    start: usize,
    end: usize,
    push: &mut impl FnMut(Category, usize, usize),
) {
    if start > 0 && alnum(text.as_bytes()[start - 1]) {
        return;
    }
    let b = text.as_bytes();
    let mut e = end;
    while e > start + 14 {
        if e >= b.len() || !alnum(b[e]) {
            let compact: Vec<u8> = b[start..e].iter().copied().filter(|c| *c != b' ').collect();
            if iban_ok(&compact) {
                push(Category::Iban, start, e);
                return;
            }
        }
        e -= 1;
        while e > start && b[e - 1] == b' ' {
            e -= 1;
        }
    }
}

/// Keep the highest-priority candidates that do not overlap a kept one; longer wins a tie.
fn resolve_overlaps(mut cands: Vec<Finding>) -> Vec<Finding> {
    cands.sort_by(|a, b| {
        a.category
            .cmp(&b.category)
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.start.cmp(&b.start))
    });
    let mut kept: Vec<Finding> = Vec::new();
    for c in cands {
        if kept.iter().all(|k| c.end <= k.start || c.start >= k.end) {
            kept.push(c);
        }
    }
    kept.sort_by_key(|f| f.start);
    kept
}

#[cfg(test)]
mod tests;
