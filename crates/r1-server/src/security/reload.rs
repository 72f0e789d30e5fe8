//! Keys reload: on SIGHUP, and when the keys file changes (polled: its size, modification
//! time and inode, which an atomic rename always changes). The new keys replace the old ones
//! whole; requests already admitted keep their identity, so nothing in flight is dropped. A
//! file that does not parse leaves the old keys in force and says so.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Security;

/// How often the keys file is looked at.
pub const POLL: Duration = Duration::from_millis(500);

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

fn stamp(p: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(p).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        inode,
    })
}

fn reload(sec: &Security, why: &str) {
    match sec.reload_keys() {
        Ok(n) => eprintln!("r1serve: keys reloaded ({why}): {n} key(s)"),
        Err(e) => {
            tracing::error!("keys reload failed ({why}): {e}");
            eprintln!("r1serve: keys reload failed ({why}): {e}; the previous keys stay in force");
        }
    }
}

/// Start watching (no-op for an open server). Runs until the runtime stops.
pub fn spawn(sec: Arc<Security>) {
    let Some(path) = sec.config.keys_file.clone() else {
        return;
    };
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut last = stamp(&path);
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hup_fut = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup_fut = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = hup_fut => {
                    last = stamp(&path);
                    reload(&sec, "SIGHUP");
                }
                _ = tick.tick() => {
                    let now = stamp(&path);
                    if now != last && now.is_some() {
                        last = now;
                        reload(&sec, "file changed");
                    }
                }
            }
        }
    });
}
