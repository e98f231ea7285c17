//! `CreateUser` → `UserCreated`.

use eventline_events::{Event, UserCreated};
use eventline_runtime::problem::FieldError;
use serde::Deserialize;

use super::fields::{Email, Name, Unchecked};
use super::{Errors, IdGen, optional_id};

/// Longest first or last name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest e-mail address (RFC 5321 path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// `POST /users`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUser {
    /// Generated (UUIDv7) when absent.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub user_id: Option<String>,
    #[schema(value_type = Email, inline)]
    pub email: Unchecked<Email>,
    #[schema(value_type = Name, inline)]
    pub first_name: Unchecked<Name>,
    #[schema(value_type = Name, inline)]
    pub last_name: Unchecked<Name>,
}

pub fn create_user(
    command: CreateUser,
    ids: &mut IdGen,
    mut errors: Errors,
) -> Result<Event, Vec<FieldError>> {
    let user_id = optional_id(command.user_id.as_deref(), "userId", ids, &mut errors);
    let email = command.email.check("email", &mut errors);
    let first_name = command.first_name.check("firstName", &mut errors);
    let last_name = command.last_name.check("lastName", &mut errors);
    let (Some(email), Some(first_name), Some(last_name)) = (email, first_name, last_name) else {
        return Err(errors.into_list());
    };
    errors.finish(|| {
        Event::UserCreated(UserCreated {
            user_id,
            email: email.into_string(),
            first_name: first_name.into_string(),
            last_name: last_name.into_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::test_support::fields;

    fn command(email: &str, first: &str, last: &str) -> CreateUser {
        CreateUser { user_id: None, email: email.into(), first_name: first.into(), last_name: last.into() }
    }

    fn decide(command: CreateUser) -> Result<Event, Vec<FieldError>> {
        create_user(command, &mut IdGen::random(), Errors::default())
    }

    #[test]
    fn a_valid_command_produces_user_created_with_a_generated_v7_id() {
        let Ok(Event::UserCreated(user)) = decide(command("ada@example.com", "Ada", "Lovelace")) else {
            panic!("expected UserCreated")
        };
        assert_eq!(user.user_id.get_version_num(), 7);
        assert_eq!(user.email, "ada@example.com");
        assert_eq!((user.first_name.as_str(), user.last_name.as_str()), ("Ada", "Lovelace"));
    }

    #[test]
    fn a_client_supplied_id_is_kept() {
        let id = "550e8400-e29b-41d4-a716-446655440000";
        let cmd = CreateUser { user_id: Some(id.into()), ..command("a@b.co", "A", "B") };
        let Ok(Event::UserCreated(user)) = decide(cmd) else { panic!() };
        assert_eq!(user.user_id.to_string(), id);
    }

    #[test]
    fn every_invalid_field_is_reported() {
        assert_eq!(fields(decide(command("nope", " ", ""))), ["email", "firstName", "lastName"]);
        for bad_id in ["42", "00000000-0000-0000-0000-000000000000"] {
            let cmd = CreateUser { user_id: Some(bad_id.into()), ..command("a@b.co", "A", "B") };
            assert_eq!(fields(decide(cmd)), ["userId"]);
        }
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        assert_eq!(fields(decide(command("a@b.co", &long, "B\u{0}"))), ["firstName", "lastName"]);
        assert!(decide(command("a@b.co", &"x".repeat(MAX_NAME_CHARS), "B")).is_ok());
    }

    #[test]
    fn email_syntax() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org", "ü@exämple.de"] {
            assert!(decide(command(ok, "A", "B")).is_ok(), "{ok}");
        }
        let too_long = format!("{}@{}.com", "a".repeat(64), "b".repeat(190));
        for bad in [
            "", "a", "@b.co", "a@", "a@b", "a b@c.de", "a@b..co", "a@-b.co", "a@b.co\n", "a@@b.co", &too_long,
        ] {
            assert_eq!(fields(decide(command(bad, "A", "B"))), ["email"], "{bad:?}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Names from all of Unicode, control characters included.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "\\PC{1,120}", "[a-z]{1,10}", Just(String::new())]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Whatever the input: either an event carrying the text exactly as sent, or errors that
        /// name only the command's fields; never a panic.
        #[test]
        fn create_user_keeps_valid_text_verbatim_and_names_what_is_invalid(
            email in prop_oneof![any::<String>(), "[a-z.]{1,20}@[a-z]{1,10}\\.[a-z]{2,4}"],
            first in text(),
            last in text(),
        ) {
            let command = CreateUser { user_id: None, email: email.as_str().into(), first_name: first.as_str().into(), last_name: last.as_str().into() };
            match create_user(command, &mut IdGen::random(), Errors::default()) {
                Ok(Event::UserCreated(user)) => {
                    prop_assert_eq!((user.email, user.first_name, user.last_name), (email, first.clone(), last.clone()));
                    prop_assert!(!first.chars().any(char::is_control) && first.chars().count() <= MAX_NAME_CHARS);
                }
                Ok(other) => prop_assert!(false, "unexpected event {:?}", other),
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    for error in errors {
                        prop_assert!(["email", "firstName", "lastName"].contains(&error.field.as_str()), "{:?}", error);
                    }
                }
            }
        }
    }
}
