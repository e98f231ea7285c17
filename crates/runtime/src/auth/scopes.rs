//! The four scopes every eventline API is guarded by, and a set of them.

use std::fmt;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read the query API: entities, history, live streams.
    Read,
    /// Send commands.
    Write,
    /// Act in the console: redrive, discard, rebuild, switch, roll back, verify.
    Operate,
    /// Look at the console, payloads masked.
    View,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Operate, Scope::View];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Operate => "operate",
            Scope::View => "view",
        }
    }

    pub fn from_name(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub const NONE: Scopes = Scopes(0);
    pub const EVERY: Scopes = Scopes(0b1111);

    pub fn of(scopes: &[Scope]) -> Scopes {
        scopes.iter().fold(Scopes::NONE, |set, s| set.with(*s))
    }

    pub fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes of a configured entry: names joined by `+`. The console's roles are kept as
    /// aliases: `viewer` is `view`, `operator` is `operate+view`.
    pub fn parse(list: &str) -> Option<Scopes> {
        list.split('+').try_fold(Scopes::NONE, |set, name| match name {
            "viewer" => Some(set.with(Scope::View)),
            "operator" => Some(set.with(Scope::Operate).with(Scope::View)),
            _ => Scope::from_name(name).map(|s| set.with(s)),
        })
    }

    /// The known scope names among a token's claimed scopes; others are ignored.
    pub fn from_claimed<'a>(claimed: impl IntoIterator<Item = &'a str>) -> Scopes {
        claimed.into_iter().filter_map(Scope::from_name).fold(Scopes::NONE, Scopes::with)
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// `read write`, or `none`.
impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> =
            Scope::ALL.into_iter().filter(|s| self.contains(*s)).map(Scope::name).collect();
        if names.is_empty() { f.write_str("none") } else { f.write_str(&names.join(" ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_scopes_and_the_console_roles_stay_aliases() {
        assert_eq!(Scopes::parse("read+write"), Some(Scopes::of(&[Scope::Read, Scope::Write])));
        assert_eq!(Scopes::parse("operator"), Some(Scopes::of(&[Scope::Operate, Scope::View])));
        assert_eq!(Scopes::parse("viewer"), Some(Scopes::of(&[Scope::View])));
        assert_eq!(Scopes::parse("read+admin"), None);
        assert_eq!(Scopes::from_claimed("openid read profile".split(' ')).to_string(), "read");
    }
}
