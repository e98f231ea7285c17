//! The request fields that have a format of their own: names, reasons, e-mail addresses, skus,
//! payment methods, prices and payments. Each is a type that only [`Field::parse`] makes, checking
//! the text against its pattern in [`formats`] (and its length or range), and each describes
//! itself to the OpenAPI document with that same pattern. The document's patterns therefore come
//! from the types the decisions use, whatever the fields are called.
//!
//! A request carries these fields as [`Unchecked`] text. The decision checks them all and names
//! every one that fails; checking while the body is deserialized would stop at the first.

use std::fmt;
use std::marker::PhantomData;

use eventline_events::{Amount, Currency};
use serde::Deserialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::{
    Errors, MAX_EMAIL_CHARS, MAX_NAME_CHARS, MAX_PAYMENT, MAX_REASON_CHARS, MAX_UNIT_PRICE, formats,
};

/// The text of the field types that hold text, once checked.
macro_rules! checked_text {
    ($($type:ty),*) => {
        $(impl $type {
            pub fn into_string(self) -> String {
                self.0
            }
        })*
    };
}

checked_text!(Name, Reason, Email, Sku, PaymentMethod);

/// Gives a field type its schema (named after the type).
macro_rules! described {
    ($type:ty, $schema:expr) => {
        impl utoipa::PartialSchema for $type {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }

        impl utoipa::ToSchema for $type {}
    };
}

/// A field type: what text it accepts ([`Field::parse`]), and how the OpenAPI document says so
/// (its `PartialSchema`: the pattern `parse` checks, its lengths, an example). A request names
/// the type for the document with `#[schema(value_type = …, inline)]` on its [`Unchecked`] field.
pub trait Field: utoipa::PartialSchema + Sized {
    /// The value, or what the text must be (the message a client reads).
    fn parse(text: &str) -> Result<Self, String>;
}

/// A field's text as the client sent it, to be checked by the decision ([`Unchecked::check`]).
#[derive(Deserialize)]
#[serde(transparent)]
pub struct Unchecked<T> {
    text: String,
    #[serde(skip)]
    kind: PhantomData<fn() -> T>,
}

impl<T: Field> Unchecked<T> {
    /// The value, or `None` with the field's error added to `errors`.
    pub fn check(&self, field: &str, errors: &mut Errors) -> Option<T> {
        T::parse(&self.text).map_err(|message| errors.add(field, message)).ok()
    }
}

impl<T> From<&str> for Unchecked<T> {
    fn from(text: &str) -> Self {
        Unchecked { text: text.to_owned(), kind: PhantomData }
    }
}

impl<T> From<String> for Unchecked<T> {
    fn from(text: String) -> Self {
        Unchecked { text, kind: PhantomData }
    }
}

impl<T> Clone for Unchecked<T> {
    fn clone(&self) -> Self {
        self.text.as_str().into()
    }
}

impl<T> fmt::Debug for Unchecked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.text.fmt(f)
    }
}

/// A first or last name: free text ([`text`]) of at most `MAX_NAME_CHARS` characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

/// Why stock was adjusted: free text ([`text`]) of at most `MAX_REASON_CHARS` characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Field for Name {
    fn parse(text: &str) -> Result<Self, String> {
        self::text(text, MAX_NAME_CHARS).map(Name)
    }
}

impl Field for Reason {
    fn parse(text: &str) -> Result<Self, String> {
        self::text(text, MAX_REASON_CHARS).map(Reason)
    }
}

described!(Name, text_schema(MAX_NAME_CHARS));
described!(Reason, text_schema(MAX_REASON_CHARS));

/// Free text: [`formats::TEXT_PATTERN`] (not blank, no control characters), at most `max`
/// characters.
fn text(text: &str, max: usize) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else if text.chars().count() > max {
        Err(format!("must be at most {max} characters"))
    } else if !formats::is_text(text) {
        Err("must not contain control characters".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

fn text_schema(max: usize) -> ObjectBuilder {
    string(formats::TEXT_PATTERN).min_length(Some(1)).max_length(Some(max))
}

/// An e-mail address: [`formats::EMAIL_PATTERN`], at most `MAX_EMAIL_CHARS` characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Field for Email {
    fn parse(text: &str) -> Result<Self, String> {
        if text.chars().count() <= MAX_EMAIL_CHARS && formats::is_email(text) {
            Ok(Email(text.to_owned()))
        } else {
            Err("must be an e-mail address like name@example.com".to_owned())
        }
    }
}

described!(
    Email,
    string(formats::EMAIL_PATTERN)
        .description(Some("An e-mail address."))
        .max_length(Some(MAX_EMAIL_CHARS))
        .examples(["ada@example.com"])
);

/// A stock keeping unit: `eventline_events::is_valid_sku`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku(String);

impl Field for Sku {
    fn parse(text: &str) -> Result<Self, String> {
        if eventline_events::is_valid_sku(text) {
            Ok(Sku(text.to_owned()))
        } else {
            Err(format!("must be {}", eventline_events::SKU_RULE))
        }
    }
}

described!(Sku, string(eventline_events::SKU_PATTERN).examples(["LAPTOP-001"]));

/// How a payment was made: [`formats::PAYMENT_METHOD_PATTERN`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethod(String);

impl Field for PaymentMethod {
    fn parse(text: &str) -> Result<Self, String> {
        if formats::is_payment_method(text) {
            Ok(PaymentMethod(text.to_owned()))
        } else {
            Err("must be 1-32 lower-case letters, digits or '_', starting with a letter".to_owned())
        }
    }
}

described!(
    PaymentMethod,
    string(formats::PAYMENT_METHOD_PATTERN)
        .description(Some("e.g. `credit_card`, `paypal`, `bank_transfer`."))
        .examples(["credit_card"])
);

/// A unit price: [`formats::PRICE_PATTERN`] (0 to `MAX_UNIT_PRICE`). Its fraction digits are
/// held to the order's currency by [`super::in_currency`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price(pub Amount);

impl Field for Price {
    fn parse(text: &str) -> Result<Self, String> {
        amount(text, formats::is_price(text), MAX_UNIT_PRICE).map(Price)
    }
}

described!(
    Price,
    string(formats::PRICE_PATTERN)
        .description(Some(
            "Unit price: a decimal string, at most as many fraction digits as the currency has."
        ))
        .examples(["299.99"])
);

/// A payment: [`formats::PAYMENT_PATTERN`] (greater than 0, at most `MAX_PAYMENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment(pub Amount);

impl Field for Payment {
    fn parse(text: &str) -> Result<Self, String> {
        if formats::is_decimal(text) && !text.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
            return Err("must be greater than 0".to_owned());
        }
        amount(text, formats::is_payment(text), MAX_PAYMENT).map(Payment)
    }
}

described!(
    Payment,
    string(formats::PAYMENT_PATTERN)
        .description(Some(
            "A decimal string greater than 0, at most as many fraction digits as the currency has."
        ))
        .examples(["299.99"])
);

/// An ISO 4217 code that has a minor unit. The document has one `Currency` schema, listing
/// them, that every currency field refers to (so that generated clients have one currency type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrencyCode(pub Currency);

impl Field for CurrencyCode {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
            .map(CurrencyCode)
            .map_err(|_| "must be an ISO 4217 currency code such as USD or EUR".to_owned())
    }
}

impl utoipa::PartialSchema for CurrencyCode {
    fn schema() -> RefOr<Schema> {
        string_type()
            .description(Some(
                "An ISO 4217 currency code that has a minor unit (no funds, metals or test codes).",
            ))
            .enum_values(Some(Currency::all().map(|c| c.code())))
            .examples(["USD"])
            .into()
    }
}

impl utoipa::ToSchema for CurrencyCode {
    fn name() -> std::borrow::Cow<'static, str> {
        "Currency".into()
    }
}

/// An amount whose text `valid`ates against its pattern, or why not.
fn amount(text: &str, valid: bool, max: i64) -> Result<Amount, String> {
    if !valid {
        return Err(if formats::is_decimal(text) {
            format!("must be at most {max}")
        } else {
            "must be a decimal string such as \"299.99\": digits and an optional fraction, no sign, exponent or \
             leading zeros"
                .to_owned()
        });
    }
    Amount::parse_plain(text).map_err(|error| error.to_string())
}

fn string(pattern: &str) -> ObjectBuilder {
    string_type().pattern(Some(pattern))
}

fn string_type() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        let price = |text: &str| Price::parse(text).map(|p| p.0.to_string());
        let payment = |text: &str| Payment::parse(text).map(|p| p.0.to_string());
        assert_eq!(price("0").unwrap(), "0");
        assert_eq!(payment("10.5").unwrap(), "10.5");
        assert!(payment("0.00").unwrap_err().contains("greater than 0"));
        assert!(price("-1").unwrap_err().contains("decimal string"));
        assert!(price("1e3").unwrap_err().contains("decimal string"));
        assert!(price("1000000000.01").unwrap_err().contains("at most 1000000000"));
    }

    #[test]
    fn skus() {
        for ok in ["LAPTOP-001", "a", "x.y_z-1", &"A".repeat(64)] {
            assert!(Sku::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-A", "A B", "A/B", "ü", &"A".repeat(65), "A\0"] {
            assert!(Sku::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn payment_methods() {
        for ok in ["credit_card", "paypal", "a", &format!("a{}", "b".repeat(31))] {
            assert!(PaymentMethod::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Card", "1card", "credit-card", &format!("a{}", "b".repeat(32))] {
            assert!(PaymentMethod::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unchecked_text_is_checked_when_asked_and_named_when_invalid() {
        let mut errors = Errors::within("items[0].");
        assert_eq!(Unchecked::<Sku>::from("A-1").check("sku", &mut errors), Some(Sku("A-1".into())));
        assert_eq!(Unchecked::<Sku>::from("A 1").check("sku", &mut errors), None);
        let named: Vec<String> = errors.into_list().into_iter().map(|e| e.field).collect();
        assert_eq!(named, ["items[0].sku"]);
    }
}
