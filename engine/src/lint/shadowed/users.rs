//! User ids listed by an earlier user rule (or entry).

use ahash::AHashMap;

use super::{Cover, Style};
use crate::lint::Warning;

pub(super) fn user_rules(out: &mut Vec<Warning>, path: &str, rules: &[Vec<&str>]) {
    let style = Style { rules: path, field: "users", lead: "" };
    let mut seen: AHashMap<&str, (usize, usize)> = AHashMap::new();
    for (j, users) in rules.iter().enumerate() {
        let covers: Vec<Option<Cover>> = users
            .iter()
            .enumerate()
            .map(|(k, &user)| {
                let (i, m) = *seen.entry(user).or_insert((j, k));
                let detail = format!("user {user:?}");
                match (i < j, m < k) {
                    (true, _) => Some(Cover::Rule { index: i, detail }),
                    (false, true) => Some(Cover::Entry { index: m, detail }),
                    (false, false) => None,
                }
            })
            .collect();
        style.report(out, j, &covers, |_| String::new());
    }
}

#[cfg(test)]
mod tests {
    use crate::lint::shadowed::tests::{assert_clean, assert_lint, U};

    #[test]
    fn users_listed_twice() {
        assert_lint(
            "user_rules:
  - {users: [alice, bob], target: new_cluster}
  - {users: [bob], target: old_cluster}
  - {users: [carol, alice, carol, Alice], target: old_cluster}
  - {users: [alice, bob], target: old_cluster}
  - {users: [carol, dave], target: old_cluster}",
            &[
                &format!("{U}[1]: never matches: {U}[0] already matches every request it would (user \"bob\")"),
                &format!("{U}[2].users[1]: never matches: {U}[0] already matches every request it would (user \"alice\")"),
                &format!("{U}[2].users[2]: redundant: {U}[2].users[0] already covers it (user \"carol\")"),
                &format!("{U}[3]: never matches: {U}[0] already matches every request it would (user \"alice\", user \"bob\")"),
                &format!("{U}[4].users[0]: never matches: {U}[2] already matches every request it would (user \"carol\")"),
            ],
        );
    }

    #[test]
    fn distinct_users_are_clean() {
        assert_clean(
            "user_rules:
  - {users: [alice, bob], target: new_cluster}
  - {users: [Alice, bobby, carol], target: old_cluster}",
        );
    }
}
