//! The syntax of the command API's text fields, as patterns. Each field type in
//! [`super::fields`] checks its input against one of them and publishes the very same one in its
//! OpenAPI schema, so the document and the service cannot disagree on which strings are valid.
//! Rules no pattern can state (an amount's fraction digits per currency) are checked in code and
//! stated in the document otherwise (`http::openapi`).

use std::sync::LazyLock;

use regex::Regex;

/// Free text (names, reasons): no control characters, and at least one character that is
/// neither white space nor a control character.
pub const TEXT_PATTERN: &str = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\x9F\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$";

/// An e-mail address: a local part of visible characters other than `@` (non-ASCII ones
/// included), `@`, and a domain of two or more dot-separated labels of ASCII letters and digits
/// or non-ASCII characters, with hyphens inside. Deliverability is not ours to judge.
pub const EMAIL_PATTERN: &str = concat!(
    r"^[^\x00-\x20\x40\x7F-\x9F]+@",
    r"[^\x00-\x2F\x3A-\x40\x5B-\x60\x7B-\x9F](?:[^\x00-\x2C\x2E\x2F\x3A-\x40\x5B-\x60\x7B-\x9F]*[^\x00-\x2F\x3A-\x40\x5B-\x60\x7B-\x9F])?",
    r"(?:\.[^\x00-\x2F\x3A-\x40\x5B-\x60\x7B-\x9F](?:[^\x00-\x2C\x2E\x2F\x3A-\x40\x5B-\x60\x7B-\x9F]*[^\x00-\x2F\x3A-\x40\x5B-\x60\x7B-\x9F])?)+$",
);

/// A unit price: a decimal string from 0 to 1,000,000,000 (`decide::MAX_UNIT_PRICE`), digits
/// with an optional fraction, no sign, no leading zeros.
pub const PRICE_PATTERN: &str = r"^(?:(?:0|[1-9][0-9]{0,8})(?:\.[0-9]+)?|1000000000(?:\.0+)?)$";

/// A payment: a decimal string greater than 0 and at most 1,000,000,000,000
/// (`decide::MAX_PAYMENT`), written as a price is.
pub const PAYMENT_PATTERN: &str =
    r"^(?:[1-9][0-9]{0,11}(?:\.[0-9]+)?|0\.[0-9]*[1-9][0-9]*|1000000000000(?:\.0+)?)$";

/// How a payment was made (`credit_card`, `paypal`, `bank_transfer`): 1 to 32 lower-case letters,
/// digits or `_`, starting with a letter.
pub const PAYMENT_METHOD_PATTERN: &str = "^[a-z][a-z0-9_]{0,31}$";

/// A decimal string: digits with an optional fraction, no sign, no leading zeros.
const DECIMAL_PATTERN: &str = r"^(?:0|[1-9][0-9]*)(?:\.[0-9]+)?$";

/// The pattern an amount with at most `digits` fraction digits matches (a currency's minor unit).
pub fn fraction_pattern(digits: u32) -> String {
    if digits == 0 { r"^[0-9]+$".to_owned() } else { format!(r"^[0-9]+(?:\.[0-9]{{1,{digits}}})?$") }
}

static TEXT: LazyLock<Regex> = LazyLock::new(|| compiled(TEXT_PATTERN));
static EMAIL: LazyLock<Regex> = LazyLock::new(|| compiled(EMAIL_PATTERN));
static PRICE: LazyLock<Regex> = LazyLock::new(|| compiled(PRICE_PATTERN));
static PAYMENT: LazyLock<Regex> = LazyLock::new(|| compiled(PAYMENT_PATTERN));
static PAYMENT_METHOD: LazyLock<Regex> = LazyLock::new(|| compiled(PAYMENT_METHOD_PATTERN));
static DECIMAL: LazyLock<Regex> = LazyLock::new(|| compiled(DECIMAL_PATTERN));

fn compiled(pattern: &str) -> Regex {
    // The patterns are constants, compiled by the tests below.
    Regex::new(pattern).expect("a constant pattern compiles")
}

pub fn is_text(text: &str) -> bool {
    TEXT.is_match(text)
}

pub fn is_email(email: &str) -> bool {
    EMAIL.is_match(email)
}

pub fn is_price(amount: &str) -> bool {
    PRICE.is_match(amount)
}

pub fn is_payment(amount: &str) -> bool {
    PAYMENT.is_match(amount)
}

pub fn is_payment_method(method: &str) -> bool {
    PAYMENT_METHOD.is_match(method)
}

pub fn is_decimal(amount: &str) -> bool {
    DECIMAL.is_match(amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text() {
        for ok in ["Ada", " a ", "Zoë", "a\u{00A0}b", "\u{1F600}", "l'Hôpital"] {
            assert!(is_text(ok), "{ok:?}");
        }
        for bad in ["", " ", "\u{00A0}\u{3000}", "a\tb", "a\nb", "\u{0085}a", "a\u{7F}", "\u{9F}"] {
            assert!(!is_text(bad), "{bad:?}");
        }
    }

    #[test]
    fn email() {
        for ok in
            ["ada@example.com", "a.b+c@x-y.example", "jö@bücher.de", "j3s4u~^?wd@7.cfk.example", "a@b.c"]
        {
            assert!(is_email(ok), "{ok:?}");
        }
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@localhost",
            "a@b..c",
            "a@-b.c",
            "a@b-.c",
            "a b@c.d",
            "a@b@c.d",
            "a@b_c.d",
            "a@b.c.",
            "a\u{1}@b.c",
        ] {
            assert!(!is_email(bad), "{bad:?}");
        }
    }

    #[test]
    fn amounts_follow_the_limits() {
        use crate::decide::{MAX_PAYMENT, MAX_UNIT_PRICE};
        let price_max = MAX_UNIT_PRICE.to_string();
        let payment_max = MAX_PAYMENT.to_string();
        for ok in ["0", "0.00", "10.5", "999999999.9999", &price_max, &format!("{price_max}.000")] {
            assert!(is_price(ok), "{ok:?}");
        }
        for bad in [
            "",
            "-1",
            "-0",
            "01",
            "1.",
            ".5",
            "1e3",
            "+1",
            " 1",
            &format!("{price_max}.01"),
            &format!("{}", MAX_UNIT_PRICE + 1),
        ] {
            assert!(!is_price(bad), "{bad:?}");
        }
        for ok in ["0.01", "1", "0.5", &payment_max, &format!("{payment_max}.0")] {
            assert!(is_payment(ok), "{ok:?}");
        }
        for bad in ["0", "0.00", "-1", "00.5", &format!("{}", MAX_PAYMENT + 1), &format!("{payment_max}.5")] {
            assert!(!is_payment(bad), "{bad:?}");
        }
        assert!(
            compiled(&fraction_pattern(0)).is_match("12") && !compiled(&fraction_pattern(0)).is_match("1.0")
        );
        assert!(
            compiled(&fraction_pattern(2)).is_match("1.25")
                && !compiled(&fraction_pattern(2)).is_match("1.250")
        );
    }
}
