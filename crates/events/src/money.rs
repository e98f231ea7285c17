//! Exact decimal amounts. Money never passes through a float: JSON numbers are read from their
//! literal text (serde_json's `arbitrary_precision`), strings are parsed as decimals, and amounts are
//! always written back as decimal strings so no client parses them as a float either.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An exact decimal amount of money (the currency travels beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(Decimal);

/// Why a text is not a decimal amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("{0:?} is not a decimal number (expected digits with an optional '.' fraction)")]
    Syntax(String),
    #[error("{0:?} has more digits than an amount can hold (28 significant digits)")]
    Range(String),
}

impl Amount {
    pub const ZERO: Amount = Amount(Decimal::ZERO);

    pub fn new(value: Decimal) -> Self {
        Amount(value)
    }

    pub fn as_decimal(&self) -> Decimal {
        self.0
    }

    /// Number of digits after the decimal point, as written (`"10.50"` has 2).
    pub fn fraction_digits(&self) -> u32 {
        self.0.scale()
    }

    /// Parses a plain decimal (`-12.50`, `3`), rejecting exponents, underscores, signs like `+`,
    /// whitespace and anything else a person would not write as an amount.
    pub fn parse_plain(text: &str) -> Result<Self, AmountError> {
        let digits = text.strip_prefix('-').unwrap_or(text);
        let (whole, fraction) = match digits.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (digits, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
            return Err(AmountError::Syntax(text.to_owned()));
        }
        Decimal::from_str_exact(text).map(Amount).map_err(|_| AmountError::Range(text.to_owned()))
    }

    /// Parses the literal text of a JSON number, which may carry an exponent (`1.5e2`).
    fn parse_json_number(text: &str) -> Result<Self, AmountError> {
        if text.contains(['e', 'E']) {
            Decimal::from_scientific(text).map(Amount).map_err(|_| AmountError::Range(text.to_owned()))
        } else {
            Self::parse_plain(text)
        }
    }
}

impl FromStr for Amount {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Amount::parse_plain(s)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Decimal> for Amount {
    fn from(value: Decimal) -> Self {
        Amount(value)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AmountVisitor)
    }
}

struct AmountVisitor;

impl<'de> Visitor<'de> for AmountVisitor {
    type Value = Amount;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal amount as a JSON number or string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
        Amount::parse_plain(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
        Ok(Amount(Decimal::from(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
        Ok(Amount(Decimal::from(v)))
    }

    /// serde_json (with `arbitrary_precision`) only hands a number over as an `f64` when the
    /// float's shortest decimal form is exactly the literal text, so formatting it back gives the
    /// text the client wrote; anything else arrives through `visit_map` below.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Amount, E> {
        Amount::parse_plain(&v.to_string()).map_err(E::custom)
    }

    /// serde_json with `arbitrary_precision` hands numbers over as a one-entry map holding the
    /// literal text; `serde_json::Number` knows how to read it.
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Amount, A::Error> {
        let number = serde_json::Number::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Amount::parse_json_number(number.as_str()).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize)]
    struct Wrapper {
        amount: Amount,
    }

    fn read(json: &str) -> Result<Amount, serde_json::Error> {
        serde_json::from_str::<Wrapper>(json).map(|w| w.amount)
    }

    #[test]
    fn numbers_are_read_exactly_not_through_a_float() {
        // 0.1 + 0.2 style values and more digits than an f64 holds survive unchanged.
        assert_eq!(read(r#"{"amount": 0.1}"#).unwrap().to_string(), "0.1");
        assert_eq!(read(r#"{"amount": 12345678901234567.89}"#).unwrap().to_string(), "12345678901234567.89");
        assert_eq!(read(r#"{"amount": 10.50}"#).unwrap().fraction_digits(), 2);
        assert_eq!(read(r#"{"amount": 1.5e2}"#).unwrap().to_string(), "150");
    }

    #[test]
    fn strings_are_read_as_plain_decimals() {
        assert_eq!(read(r#"{"amount": "299.99"}"#).unwrap().to_string(), "299.99");
        assert_eq!(read(r#"{"amount": "-3"}"#).unwrap().to_string(), "-3");
        for bad in ["", "1e3", "1_000", "+1", " 1", "1.", ".5", "NaN", "0x10", "1.2.3"] {
            assert!(Amount::parse_plain(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        let err = Amount::parse_plain("123456789012345678901234567890123").unwrap_err();
        assert!(matches!(err, AmountError::Range(_)));
        assert!(read(r#"{"amount": 1e400}"#).is_err());
        assert!(read(r#"{"amount": true}"#).is_err());
    }

    #[test]
    fn amounts_are_written_as_decimal_strings_keeping_their_scale() {
        let w = Wrapper { amount: "10.50".parse().unwrap() };
        assert_eq!(serde_json::to_string(&w).unwrap(), r#"{"amount":"10.50"}"#);
    }
}
