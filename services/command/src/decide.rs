//! Decisions: pure functions from a command to the events it produces, or the reasons it is
//! invalid. No I/O here, so every rule is testable as given/when/then.

use eventline_events::{Event, UserCreated};
use eventline_runtime::problem::FieldError;
use serde::Deserialize;
use uuid::Uuid;

/// Longest first or last name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest e-mail address (RFC 5321 path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// `POST /users`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUser {
    pub user_id: Option<String>,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

/// Validates a `CreateUser` and decides the `UserCreated` it produces. A missing user id is
/// generated (UUIDv7, time-ordered).
pub fn create_user(command: CreateUser) -> Result<Event, Vec<FieldError>> {
    let mut errors = Vec::new();
    let user_id = optional_id(command.user_id.as_deref(), "userId", &mut errors);
    check_email(&command.email, &mut errors);
    check_name(&command.first_name, "firstName", &mut errors);
    check_name(&command.last_name, "lastName", &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Event::UserCreated(UserCreated {
        user_id,
        email: command.email,
        first_name: command.first_name,
        last_name: command.last_name,
    }))
}

fn optional_id(id: Option<&str>, field: &str, errors: &mut Vec<FieldError>) -> Uuid {
    match id.map(Uuid::try_parse) {
        None => Uuid::now_v7(),
        Some(Ok(id)) if !id.is_nil() => id,
        Some(_) => {
            errors.push(FieldError::new(
                field,
                "must be a UUID (e.g. 550e8400-e29b-41d4-a716-446655440000), not nil",
            ));
            Uuid::nil()
        }
    }
}

fn check_name(name: &str, field: &str, errors: &mut Vec<FieldError>) {
    if name.trim().is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if name.chars().count() > MAX_NAME_CHARS {
        errors.push(FieldError::new(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    } else if name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
}

/// A pragmatic address check: `local@domain`, a dotted domain of letters, digits and hyphens, no
/// spaces or control characters. Deliverability is not ours to judge.
fn check_email(email: &str, errors: &mut Vec<FieldError>) {
    let valid = email.len() <= MAX_EMAIL_CHARS
        && email.split_once('@').is_some_and(|(local, domain)| {
            let local_ok = !local.is_empty()
                && local.len() <= 64
                && local
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '@' || !c.is_ascii() && !c.is_control());
            let labels: Vec<&str> = domain.split('.').collect();
            let domain_ok = labels.len() >= 2
                && labels.iter().all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.chars().all(|c| c.is_alphanumeric() || c == '-')
                });
            local_ok && domain_ok
        });
    if !valid {
        errors.push(FieldError::new(
            "email",
            "must be an e-mail address like name@example.com",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(email: &str, first: &str, last: &str) -> CreateUser {
        CreateUser {
            user_id: None,
            email: email.into(),
            first_name: first.into(),
            last_name: last.into(),
        }
    }

    fn fields(result: Result<Event, Vec<FieldError>>) -> Vec<String> {
        result
            .expect_err("should be invalid")
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_valid_command_produces_user_created_with_a_generated_v7_id() {
        let Ok(Event::UserCreated(user)) =
            create_user(command("ada@example.com", "Ada", "Lovelace"))
        else {
            panic!("expected UserCreated")
        };
        assert_eq!(user.user_id.get_version_num(), 7);
        assert_eq!(user.email, "ada@example.com");
        assert_eq!(
            (user.first_name.as_str(), user.last_name.as_str()),
            ("Ada", "Lovelace")
        );
    }

    #[test]
    fn a_client_supplied_id_is_kept() {
        let id = "550e8400-e29b-41d4-a716-446655440000";
        let cmd = CreateUser {
            user_id: Some(id.into()),
            ..command("a@b.co", "A", "B")
        };
        let Ok(Event::UserCreated(user)) = create_user(cmd) else {
            panic!()
        };
        assert_eq!(user.user_id.to_string(), id);
    }

    #[test]
    fn every_invalid_field_is_reported() {
        assert_eq!(
            fields(create_user(command("nope", " ", ""))),
            ["email", "firstName", "lastName"]
        );
        let bad_id = CreateUser {
            user_id: Some("42".into()),
            ..command("a@b.co", "A", "B")
        };
        assert_eq!(fields(create_user(bad_id)), ["userId"]);
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        assert_eq!(
            fields(create_user(command("a@b.co", &long, "B\u{0}"))),
            ["firstName", "lastName"]
        );
    }

    #[test]
    fn email_syntax() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org", "ü@exämple.de"] {
            assert!(create_user(command(ok, "A", "B")).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "@b.co", "a@", "a@b", "a b@c.de", "a@b..co", "a@-b.co", "a@b.co\n", "a@@b.co",
        ] {
            assert_eq!(
                fields(create_user(command(bad, "A", "B"))),
                ["email"],
                "{bad:?}"
            );
        }
    }
}
