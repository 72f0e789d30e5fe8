//! The API keys file: TOML with salted SHA-256 hashes only (a key's secret never touches the
//! disk), each key with its user, role, priority tier and per-key rate limits; edited
//! atomically (write to a temporary file, fsync, rename).
//!
//! A key looks like `r1k_<id>_<secret>`: the 12-hex-digit id is stored in the clear so a
//! presented key finds its entry without trying every salt; the 64-hex-digit secret is
//! stored only as SHA-256(salt ‖ secret) and compared in constant time.
//!
//! ```toml
//! [roles.viewer]
//! permissions = ["model:read"]
//!
//! [[keys]]
//! id = "3f9a0c1b2d4e"
//! user = "alice"
//! role = "admin"
//! tier = "vip"
//! requests_per_min = 600
//! tokens_per_min = 200000
//! salt = "…32 hex digits…"
//! hash = "…64 hex digits…"
//! created = 1764272540
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::roles::{Permission, PermissionSet, Roles};
use crate::secret::{ct_eq, hex, random_bytes, salted_hash, unhex};

const KEY_PREFIX: &str = "r1k_";
const ID_HEX: usize = 12;
const SECRET_HEX: usize = 64;
const SALT_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid keys file: {msg}")]
    Parse { path: String, msg: String },
    #[error("{path}: {field}: {msg}")]
    Field {
        path: String,
        field: String,
        msg: String,
    },
    #[error("{0}")]
    Usage(String),
}

/// One key's entry in the file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub id: String,
    pub user: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_min: Option<u32>,
    pub salt: String,
    pub hash: String,
    #[serde(default)]
    pub created: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleDef {
    pub permissions: Vec<String>,
}

/// The whole file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, RoleDef>,
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
}

/// Options of a new key.
#[derive(Clone, Debug, Default)]
pub struct NewKey {
    pub user: String,
    pub role: String,
    pub tier: Option<String>,
    pub requests_per_min: Option<u32>,
    pub tokens_per_min: Option<u32>,
}

impl KeysFile {
    /// Read and validate a keys file. A missing file is an error (the server was told to use
    /// it); `load_or_empty` is for the CLI, which creates it.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let f: KeysFile = toml::from_str(&text).map_err(|e| KeysError::Parse {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        f.validate(path)?;
        Ok(f)
    }

    pub fn load_or_empty(path: &Path) -> Result<Self, KeysError> {
        if path.exists() {
            Self::load(path)
        } else {
            Ok(KeysFile::default())
        }
    }

    /// The roles this file defines on top of the built-in ones.
    pub fn roles(&self) -> Result<Roles, String> {
        Roles::with_custom(
            self.roles
                .iter()
                .map(|(k, v)| (k.as_str(), v.permissions.as_slice())),
        )
    }

    fn validate(&self, path: &Path) -> Result<(), KeysError> {
        let field = |field: String, msg: String| KeysError::Field {
            path: path.display().to_string(),
            field,
            msg,
        };
        let roles = self.roles().map_err(|m| {
            let (f, msg) = m.split_once(": ").unwrap_or(("roles", &m));
            field(f.to_string(), msg.to_string())
        })?;
        let mut ids = HashMap::new();
        for (i, k) in self.keys.iter().enumerate() {
            let at = |f: &str| format!("keys[{i}].{f}");
            if k.id.len() != ID_HEX || unhex(&k.id).is_none() {
                return Err(field(at("id"), format!("expected {ID_HEX} hex digits")));
            }
            if let Some(j) = ids.insert(k.id.as_str(), i) {
                return Err(field(at("id"), format!("the same id as keys[{j}]")));
            }
            if k.user.trim().is_empty() {
                return Err(field(at("user"), "empty".into()));
            }
            if roles.get(&k.role).is_none() {
                let known: Vec<&str> = roles.names().collect();
                return Err(field(
                    at("role"),
                    format!("unknown role `{}` (known: {})", k.role, known.join(", ")),
                ));
            }
            if unhex(&k.salt).is_none_or(|s| s.len() != SALT_BYTES) {
                return Err(field(
                    at("salt"),
                    format!("expected {} hex digits", SALT_BYTES * 2),
                ));
            }
            if unhex(&k.hash).is_none_or(|h| h.len() != 32) {
                return Err(field(
                    at("hash"),
                    "expected a SHA-256 hash (64 hex digits)".into(),
                ));
            }
        }
        Ok(())
    }

    /// Add a key; returns the key, which exists nowhere else afterwards (print it once).
    pub fn add(&mut self, new: NewKey, now: u64) -> Result<String, KeysError> {
        let roles = self.roles().map_err(KeysError::Usage)?;
        if new.user.trim().is_empty() {
            return Err(KeysError::Usage("--user must not be empty".into()));
        }
        if roles.get(&new.role).is_none() {
            let known: Vec<&str> = roles.names().collect();
            return Err(KeysError::Usage(format!(
                "unknown role `{}` (known: {})",
                new.role,
                known.join(", ")
            )));
        }
        let rng = |n| random_bytes(n).map_err(|e| KeysError::Usage(format!("no randomness: {e}")));
        let id = loop {
            let id = hex(&rng(ID_HEX / 2)?);
            if !self.keys.iter().any(|k| k.id == id) {
                break id;
            }
        };
        let secret = hex(&rng(SECRET_HEX / 2)?);
        let salt = rng(SALT_BYTES)?;
        let hash = salted_hash(&salt, secret.as_bytes());
        self.keys.push(KeyEntry {
            id: id.clone(),
            user: new.user,
            role: new.role,
            tier: new.tier,
            requests_per_min: new.requests_per_min,
            tokens_per_min: new.tokens_per_min,
            salt: hex(&salt),
            hash: hex(&hash),
            created: now,
        });
        Ok(format!("{KEY_PREFIX}{id}_{secret}"))
    }

    /// Remove every key of `user`; returns how many went.
    pub fn revoke_user(&mut self, user: &str) -> usize {
        let before = self.keys.len();
        self.keys.retain(|k| k.user != user);
        before - self.keys.len()
    }

    /// Write atomically: a temporary file in the same directory (mode 0600), fsync, rename
    /// over the old file, fsync the directory. A reader (the server reloading) sees either the
    /// old file or the new one, never half of one.
    pub fn save(&self, path: &Path) -> Result<(), KeysError> {
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |source| KeysError::Io { path: p, source }
        };
        let text = format!(
            "# r1serve API keys: salted SHA-256 hashes only. Edit with `r1serve keys`.\n{}",
            toml::to_string(self).map_err(|e| KeysError::Usage(e.to_string()))?
        );
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).map_err(io(&tmp))?;
            f.write_all(text.as_bytes()).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(path)(e));
        }
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Who a verified key belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub key_id: String,
    pub user: String,
    pub role: String,
    pub tier: Option<String>,
    pub requests_per_min: Option<u32>,
    pub tokens_per_min: Option<u32>,
    pub permissions: PermissionSet,
}

impl Identity {
    pub fn can(&self, p: Permission) -> bool {
        self.permissions.contains(p)
    }
}

/// The keys in memory, ready to verify presented keys.
#[derive(Clone, Debug)]
pub struct KeyStore {
    by_id: HashMap<String, (KeyEntry, Vec<u8>, [u8; 32])>,
    roles: Roles,
}

impl KeyStore {
    pub fn new(file: &KeysFile) -> Result<Self, KeysError> {
        let roles = file.roles().map_err(KeysError::Usage)?;
        let mut by_id = HashMap::new();
        for k in &file.keys {
            let salt = unhex(&k.salt).unwrap_or_default();
            let mut hash = [0u8; 32];
            if let Some(h) = unhex(&k.hash).filter(|h| h.len() == 32) {
                hash.copy_from_slice(&h);
            }
            by_id.insert(k.id.clone(), (k.clone(), salt, hash));
        }
        Ok(KeyStore { by_id, roles })
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Check a presented key. The hash is computed whether or not the id exists, so a wrong
    /// id and a wrong secret cost the same.
    pub fn verify(&self, presented: &str) -> Option<Identity> {
        let (id, secret) = split_key(presented).unwrap_or(("", presented));
        let entry = self.by_id.get(id);
        let (salt, stored): (&[u8], [u8; 32]) = match entry {
            Some((_, s, h)) => (s, *h),
            None => (&[0u8; SALT_BYTES], [0xff; 32]),
        };
        let ok = ct_eq(&salted_hash(salt, secret.as_bytes()), &stored);
        let (k, _, _) = entry?;
        if !ok {
            return None;
        }
        Some(Identity {
            key_id: k.id.clone(),
            user: k.user.clone(),
            role: k.role.clone(),
            tier: k.tier.clone(),
            requests_per_min: k.requests_per_min,
            tokens_per_min: k.tokens_per_min,
            permissions: self.roles.get(&k.role).unwrap_or_default(),
        })
    }
}

fn split_key(k: &str) -> Option<(&str, &str)> {
    let rest = k.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == ID_HEX && secret.len() == SECRET_HEX).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(user: &str, role: &str) -> NewKey {
        NewKey {
            user: user.into(),
            role: role.into(),
            ..NewKey::default()
        }
    }

    #[test]
    fn add_save_load_verify_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let mut f = KeysFile::load_or_empty(&path).unwrap();
        let mut nk = new("alice", "admin");
        nk.tier = Some("vip".into());
        nk.requests_per_min = Some(60);
        let alice = f.add(nk, 1).unwrap();
        let bob = f.add(new("bob", "user"), 2).unwrap();
        f.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // Only hashes at rest.
        assert!(
            !text.contains(&alice[16..]) && !text.contains(&bob[16..]),
            "{text}"
        );
        let loaded = KeysFile::load(&path).unwrap();
        assert_eq!(loaded, f);
        let store = KeyStore::new(&loaded).unwrap();
        let a = store.verify(&alice).unwrap();
        assert_eq!((a.user.as_str(), a.role.as_str()), ("alice", "admin"));
        assert_eq!(
            (a.tier.as_deref(), a.requests_per_min),
            (Some("vip"), Some(60))
        );
        assert!(a.can(Permission::SystemConfigure));
        let b = store.verify(&bob).unwrap();
        assert!(b.can(Permission::ModelQuery) && !b.can(Permission::ModelWrite));
        // A flipped last digit, a wrong id, garbage.
        let mut wrong = alice.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert!(store.verify(&wrong).is_none());
        assert!(store
            .verify(&format!("r1k_000000000000_{}", &alice[17..]))
            .is_none());
        assert!(store.verify("").is_none() && store.verify("Bearer x").is_none());

        let mut f2 = loaded.clone();
        assert_eq!(f2.revoke_user("alice"), 1);
        f2.save(&path).unwrap();
        let store = KeyStore::new(&KeysFile::load(&path).unwrap()).unwrap();
        assert!(store.verify(&alice).is_none() && store.verify(&bob).is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "keys file readable by others: {mode:o}");
        }
    }

    #[test]
    fn bad_files_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        let mut f = KeysFile::default();
        f.add(new("a", "user"), 0).unwrap();
        f.keys[0].role = "root".into();
        std::fs::write(&path, toml::to_string(&f).unwrap()).unwrap();
        let e = KeysFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("keys[0].role") && e.contains("root"), "{e}");
        std::fs::write(&path, "[[keys]]\nid = 3\n").unwrap();
        let e = KeysFile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("k.toml") && e.contains("not a valid keys file"),
            "{e}"
        );
        std::fs::write(&path, "[roles.ops]\npermissions = [\"model:fly\"]\n").unwrap();
        let e = KeysFile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("roles.ops.permissions") && e.contains("model:fly"),
            "{e}"
        );
    }

    #[test]
    fn custom_roles_grant_their_permissions() {
        let mut f = KeysFile::default();
        f.roles.insert(
            "ops".into(),
            RoleDef {
                permissions: vec!["model:read".into(), "system:configure".into()],
            },
        );
        let k = f.add(new("carol", "ops"), 0).unwrap();
        let id = KeyStore::new(&f).unwrap().verify(&k).unwrap();
        assert!(id.can(Permission::SystemConfigure) && !id.can(Permission::ModelQuery));
        assert!(f.add(new("dan", "nope"), 0).is_err());
    }
}
