//! Who a rule applies to, the same way in every first-party plugin.
//!
//! A rule names `users` and `groups` it applies to (everyone when both are
//! empty) and `except_groups` it never applies to, whatever else matches.
//! Plugins keep the three lists among their rule's own keys (so their
//! configuration can refuse unknown keys) and ask [`Audience::includes`].

/// A rule's audience, borrowed from its configuration.
#[derive(Debug, Clone, Copy)]
pub struct Audience<'a> {
    /// Users (the token's user claim) the rule applies to.
    pub users: &'a [String],
    /// Groups the rule applies to.
    pub groups: &'a [String],
    /// Groups the rule never applies to.
    pub except_groups: &'a [String],
}

impl Audience<'_> {
    /// Whether the rule applies to `user` with `groups`: never to a member
    /// of an exempt group; else to everyone when the rule names no users
    /// and no groups, or to a named user or a member of a named group.
    pub fn includes(&self, user: &str, groups: &[String]) -> bool {
        let member = |named: &[String]| groups.iter().any(|g| named.contains(g));
        if member(self.except_groups) {
            return false;
        }
        (self.users.is_empty() && self.groups.is_empty())
            || self.users.iter().any(|u| u == user)
            || member(self.groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn everyone_named_users_and_groups_and_never_the_exempt() {
        let (none, analysts, dba, ada) = (
            list(&[]),
            list(&["analysts"]),
            list(&["dba"]),
            list(&["ada"]),
        );
        let everyone = Audience {
            users: &none,
            groups: &none,
            except_groups: &none,
        };
        assert!(everyone.includes("bob", &none));
        let named = Audience {
            users: &ada,
            groups: &analysts,
            except_groups: &dba,
        };
        assert!(named.includes("ada", &none));
        assert!(named.includes("bob", &analysts));
        assert!(!named.includes("bob", &none));
        assert!(!named.includes("ada", &dba));
        let all_but_dba = Audience {
            users: &none,
            groups: &none,
            except_groups: &dba,
        };
        assert!(all_but_dba.includes("bob", &analysts));
        assert!(!all_but_dba.includes("bob", &list(&["analysts", "dba"])));
    }
}
