//! r1-security: the pure parts of r1serve's security features, kept free of HTTP so they can
//! be tested on their own.
//!
//! - [`keys`]: the API keys file (TOML, salted SHA-256 hashes only) and key verification.
//! - [`roles`]: permissions and the roles that grant them (`admin`, `user`, custom ones).
//! - [`secret`]: constant-time comparison, random keys, hex.
//! - [`audit`]: the JSON-lines audit log with size rotation and an fsync policy.
//! - [`detect`]: sensitive-data detection (e-mail, phone, SSN, cards, IBAN, PRC ID, IPs,
//!   secrets) with checksums, scoring, and a streaming redactor.

pub mod audit;
pub mod detect;
pub mod keys;
pub mod roles;
pub mod secret;
pub mod time;

pub use audit::{AuditConfig, AuditLog, AuditRecord, FsyncPolicy};
pub use detect::{Category, Detector, Finding, RedactMode, StreamRedactor};
pub use keys::{Identity, KeyEntry, KeyStore, KeysError, KeysFile};
pub use roles::{Permission, Roles};
