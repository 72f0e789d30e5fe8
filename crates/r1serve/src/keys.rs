//! `r1serve keys add|list|revoke`: edit an API keys file (salted hashes only; written
//! atomically, so a running server reloads either the old file or the new one).

use std::path::PathBuf;

use anyhow::Context;
use r1_security::keys::NewKey;
use r1_security::KeysFile;

#[derive(clap::Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key for a user and print it (once: only its salted hash is stored).
    Add {
        /// The keys file (created if missing).
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        user: String,
        /// `admin`, `user`, or a custom role from the file's [roles.NAME] tables.
        #[arg(long)]
        role: String,
        /// Priority tier (a priority class name, e.g. "vip").
        #[arg(long)]
        tier: Option<String>,
        /// Per-key request limit (requests per minute).
        #[arg(long)]
        requests_per_min: Option<u32>,
        /// Per-key token limit (tokens per minute).
        #[arg(long)]
        tokens_per_min: Option<u32>,
    },
    /// List the keys (ids, users, roles, tiers, limits; never secrets).
    List {
        #[arg(long)]
        file: PathBuf,
    },
    /// Remove every key of a user.
    Revoke {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        user: String,
    },
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn run(args: &KeysArgs) -> anyhow::Result<()> {
    match &args.command {
        KeysCommand::Add {
            file,
            user,
            role,
            tier,
            requests_per_min,
            tokens_per_min,
        } => {
            let mut f = KeysFile::load_or_empty(file)?;
            let key = f
                .add(
                    NewKey {
                        user: user.clone(),
                        role: role.clone(),
                        tier: tier.clone(),
                        requests_per_min: *requests_per_min,
                        tokens_per_min: *tokens_per_min,
                    },
                    now(),
                )
                .with_context(|| format!("{}: adding a key", file.display()))?;
            f.save(file)?;
            eprintln!(
                "r1serve: added a key for `{user}` (role {role}) to {}; it is shown only now:",
                file.display()
            );
            println!("{key}");
        }
        KeysCommand::List { file } => {
            let f = KeysFile::load(file)?;
            println!(
                "{:<12}  {:<16}  {:<8}  {:<8}  {:>8}  {:>10}",
                "ID", "USER", "ROLE", "TIER", "REQ/MIN", "TOK/MIN"
            );
            let opt = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
            for k in &f.keys {
                println!(
                    "{:<12}  {:<16}  {:<8}  {:<8}  {:>8}  {:>10}",
                    k.id,
                    k.user,
                    k.role,
                    k.tier.as_deref().unwrap_or("-"),
                    opt(k.requests_per_min),
                    opt(k.tokens_per_min)
                );
            }
        }
        KeysCommand::Revoke { file, user } => {
            let mut f = KeysFile::load(file)?;
            let n = f.revoke_user(user);
            if n == 0 {
                anyhow::bail!("{}: no key belongs to `{user}`", file.display());
            }
            f.save(file)?;
            eprintln!(
                "r1serve: revoked {n} key(s) of `{user}` in {}",
                file.display()
            );
        }
    }
    Ok(())
}
