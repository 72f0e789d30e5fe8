//! Permissions and the roles that grant them. Built in: `admin` (everything) and `user`
//! (read and query models). Custom roles come from the keys file's `[roles.NAME]` tables.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// List and describe models.
    ModelRead,
    /// Run completions (and tokenize/detokenize).
    ModelQuery,
    /// Load and unload models.
    ModelWrite,
    /// The `/admin/*` routes: keys, configuration, cache flush, drain.
    SystemConfigure,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::ModelRead,
        Permission::ModelQuery,
        Permission::ModelWrite,
        Permission::SystemConfigure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ModelRead => "model:read",
            Permission::ModelQuery => "model:query",
            Permission::ModelWrite => "model:write",
            Permission::SystemConfigure => "system:configure",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions (a bit set: four permissions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PermissionSet(u8);

impl PermissionSet {
    pub fn of(perms: &[Permission]) -> Self {
        PermissionSet(perms.iter().fold(0, |acc, p| acc | (1 << *p as u8)))
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & (1 << p as u8) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

/// Role name → permissions.
#[derive(Clone, Debug)]
pub struct Roles(BTreeMap<String, PermissionSet>);

pub const BUILTIN_ROLES: [&str; 2] = ["admin", "user"];

impl Default for Roles {
    fn default() -> Self {
        let mut m = BTreeMap::new();
        m.insert("admin".to_string(), PermissionSet::of(&Permission::ALL));
        m.insert(
            "user".to_string(),
            PermissionSet::of(&[Permission::ModelRead, Permission::ModelQuery]),
        );
        Roles(m)
    }
}

impl Roles {
    /// The built-in roles plus custom ones (name → permission names). Errors name the role
    /// and the offending permission; built-in roles cannot be redefined.
    pub fn with_custom<'a>(
        custom: impl IntoIterator<Item = (&'a str, &'a [String])>,
    ) -> Result<Self, String> {
        let mut roles = Roles::default();
        for (name, perms) in custom {
            if BUILTIN_ROLES.contains(&name) {
                return Err(format!("roles.{name}: `{name}` is a built-in role"));
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return Err(format!(
                    "roles.{name}: role names use letters, digits, - and _"
                ));
            }
            let mut set = Vec::new();
            for p in perms {
                match Permission::parse(p) {
                    Some(p) => set.push(p),
                    None => {
                        return Err(format!(
                            "roles.{name}.permissions: unknown permission `{p}` (known: \
                             model:read, model:query, model:write, system:configure)"
                        ))
                    }
                }
            }
            roles.0.insert(name.to_string(), PermissionSet::of(&set));
        }
        Ok(roles)
    }

    pub fn get(&self, role: &str) -> Option<PermissionSet> {
        self.0.get(role).copied()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let r = Roles::default();
        let admin = r.get("admin").unwrap();
        assert!(Permission::ALL.iter().all(|p| admin.contains(*p)));
        let user = r.get("user").unwrap();
        assert!(user.contains(Permission::ModelRead) && user.contains(Permission::ModelQuery));
        assert!(!user.contains(Permission::ModelWrite));
        assert!(!user.contains(Permission::SystemConfigure));
        assert!(r.get("nobody").is_none());
    }

    #[test]
    fn custom_roles_are_checked() {
        let perms = vec!["model:read".to_string()];
        let r = Roles::with_custom([("viewer", perms.as_slice())]).unwrap();
        let v = r.get("viewer").unwrap();
        assert_eq!(v.iter().collect::<Vec<_>>(), vec![Permission::ModelRead]);
        let bad = vec!["model:delete".to_string()];
        let e = Roles::with_custom([("x", bad.as_slice())]).unwrap_err();
        assert!(
            e.contains("roles.x.permissions") && e.contains("model:delete"),
            "{e}"
        );
        let e = Roles::with_custom([("admin", perms.as_slice())]).unwrap_err();
        assert!(e.contains("built-in"), "{e}");
    }
}
