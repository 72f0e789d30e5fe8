//! API keys and roles over real HTTP: every route × every kind of caller (no key, a wrong
//! key, a custom read-only role, `user`, `admin`), with an audit record checked for every
//! request (input hash included); the drain route; and key reload while requests run.

mod security_support;
mod serve_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use security_support::{add_key, audit_record, audit_records, call, keys_cmd, sha256_hex};
use serde_json::Value;
use serve_support::Server;

const CHAT: &str = r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}"#;
const COMPLETION: &str = r#"{"prompt":"Hello","max_tokens":2}"#;

#[test]
fn route_role_matrix_with_audit_records() {
    if serve_support::model().is_none() {
        eprintln!("SKIP: smollm2.gguf missing (scripts/fetch-models.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, "[roles.viewer]\npermissions = [\"model:read\"]\n").unwrap();
    let admin = add_key(&keys, "ada", "admin", &["--tier", "vip"]);
    let user = add_key(&keys, "uma", "user", &[]);
    let viewer = add_key(&keys, "vic", "viewer", &[]);
    let audit = dir.path().join("audit.log");
    let s = Server::start(&[
        "--keys",
        keys.to_str().unwrap(),
        "--audit-log",
        audit.to_str().unwrap(),
        "--audit-fsync",
        "always",
    ])
    .unwrap();
    assert!(
        s.log().contains("API keys required (3 key(s)"),
        "{}",
        s.log()
    );
    let wrong = format!("{}0", &admin[..admin.len() - 1]);
    let wrong = if wrong == admin {
        format!("{}1", &admin[..admin.len() - 1])
    } else {
        wrong
    };
    let callers: [(&str, Option<&str>); 5] = [
        ("none", None),
        ("wrong", Some(&wrong)),
        ("viewer", Some(&viewer)),
        ("user", Some(&user)),
        ("admin", Some(&admin)),
    ];
    // (method, path, body, what an allowed caller gets, roles allowed)
    let routes: &[(&str, &str, &str, u16, &[&str])] = &[
        (
            "GET",
            "/health",
            "",
            200,
            &["none", "wrong", "viewer", "user", "admin"],
        ),
        (
            "GET",
            "/ready",
            "",
            200,
            &["none", "wrong", "viewer", "user", "admin"],
        ),
        ("GET", "/v1/models", "", 200, &["viewer", "user", "admin"]),
        (
            "GET",
            "/v1/models/smollm2",
            "",
            200,
            &["viewer", "user", "admin"],
        ),
        (
            "GET",
            "/v1/engine/stats",
            "",
            200,
            &["viewer", "user", "admin"],
        ),
        (
            "POST",
            "/v1/chat/completions",
            CHAT,
            200,
            &["user", "admin"],
        ),
        (
            "POST",
            "/v1/completions",
            COMPLETION,
            200,
            &["user", "admin"],
        ),
        (
            "POST",
            "/tokenize",
            r#"{"prompt":"hi"}"#,
            200,
            &["user", "admin"],
        ),
        (
            "POST",
            "/detokenize",
            r#"{"tokens":[1,2]}"#,
            200,
            &["user", "admin"],
        ),
        // One model per process: load/unload answer 501 to those allowed to ask.
        ("POST", "/v1/models/smollm2/load", "", 501, &["admin"]),
        ("POST", "/v1/models/smollm2/unload", "", 501, &["admin"]),
        ("GET", "/admin/keys", "", 200, &["admin"]),
        ("GET", "/admin/config", "", 200, &["admin"]),
        ("POST", "/admin/keys/reload", "", 200, &["admin"]),
        ("POST", "/admin/cache/flush", "", 200, &["admin"]),
        // Unknown routes need a valid key before they say 404.
        (
            "GET",
            "/no/such/route",
            "",
            404,
            &["viewer", "user", "admin"],
        ),
    ];
    let mut sent = Vec::new();
    for (i, (method, path, body, ok, allowed)) in routes.iter().enumerate() {
        for (who, key) in &callers {
            let rid = format!("matrix-{i}-{who}");
            let a = call(&s.base, method, path, *key, body, &rid);
            let want = if allowed.contains(who) {
                *ok
            } else if matches!(*who, "none" | "wrong") {
                401
            } else {
                403
            };
            assert_eq!(a.status, want, "{method} {path} as {who}: {}", a.body);
            if want == 401 || want == 403 {
                let e = &a.json()["error"];
                let code = if want == 401 {
                    "invalid_api_key"
                } else {
                    "insufficient_permissions"
                };
                assert_eq!(e["code"], code, "{}", a.body);
                assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
                assert_eq!(e["type"], "invalid_request_error");
            }
            sent.push((rid, body.to_string(), want, *who, path.to_string()));
        }
    }
    // The admin listing never shows a secret or a hash.
    let list = call(
        &s.base,
        "GET",
        "/admin/keys",
        Some(&admin),
        "",
        "list-again",
    );
    assert!(
        !list.body.contains(&admin[17..]) && !list.body.contains("hash"),
        "{}",
        list.body
    );
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 3);

    // One audit record per request, with the input's hash, the status and the caller.
    for (rid, body, status, who, path) in &sent {
        let r = audit_record(&audit, rid);
        assert_eq!(r["status"], *status, "{r}");
        assert_eq!(r["input_sha256"], sha256_hex(body.as_bytes()), "{r}");
        assert_eq!(r["input_bytes"], body.len());
        assert_eq!(r["route"], path.as_str());
        let user = match *who {
            "viewer" => Value::from("vic"),
            "user" => Value::from("uma"),
            "admin" => Value::from("ada"),
            _ => Value::Null,
        };
        assert_eq!(r["user_id"], user, "{r}");
        assert!(r["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(
            r.get("input_text").is_none(),
            "raw text without --audit-include-text"
        );
        if *status == 200 && path.contains("completions") {
            assert!(r["prompt_tokens"].as_u64().unwrap() > 0, "{r}");
            assert!(r["completion_tokens"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(r["model"], "smollm2");
        }
    }
    // Nothing else but the harness's readiness polls (and the listing above).
    let ours: std::collections::HashSet<&str> = sent.iter().map(|s| s.0.as_str()).collect();
    let all = audit_records(&audit);
    let mine = all
        .iter()
        .filter(|r| ours.contains(r["request_id"].as_str().unwrap()))
        .count();
    assert_eq!(mine, sent.len(), "one record per request");
    for r in &all {
        let id = r["request_id"].as_str().unwrap();
        assert!(
            ours.contains(id) || id == "list-again" || r["route"] == "/ready",
            "{r}"
        );
    }

    // Drain: a user may not, an admin may; the server then exits by itself.
    assert_eq!(
        call(&s.base, "POST", "/admin/drain", Some(&user), "", "d1").status,
        403
    );
    assert_eq!(
        call(&s.base, "POST", "/admin/drain", None, "", "d2").status,
        401
    );
    assert_eq!(
        call(&s.base, "POST", "/admin/drain", Some(&admin), "", "d3").status,
        202
    );
    let mut s = s;
    let t0 = Instant::now();
    loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            assert!(st.success(), "{}", s.log());
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "did not drain: {}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    serve_support::wait_until(10, "the drain log line", || {
        s.log().contains("/admin/drain: draining")
    });
    for rid in ["d1", "d2", "d3"] {
        audit_record(&audit, rid);
    }
}

#[test]
fn keys_reload_on_change_and_sighup_while_requests_run() {
    if serve_support::model().is_none() {
        eprintln!("SKIP: smollm2.gguf missing (scripts/fetch-models.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    let steady = add_key(&keys, "steady", "user", &[]);
    let admin = add_key(&keys, "root", "admin", &[]);
    let s = Server::start(&["--keys", keys.to_str().unwrap()]).unwrap();
    let base = s.base.clone();

    // Requests run the whole time; none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, done, base, key) = (stop.clone(), done.clone(), base.clone(), steady.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let a = call(
                    &base,
                    "POST",
                    "/v1/completions",
                    Some(&key),
                    COMPLETION,
                    &format!("bg-{i}"),
                );
                assert_eq!(a.status, 200, "request {i} during reloads: {}", a.body);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let wait_status = |key: &str, want: u16| {
        let t0 = Instant::now();
        loop {
            let st = call(&base, "GET", "/v1/models", Some(key), "", "probe").status;
            if st == want {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "still {st}, want {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // A key added by the CLI works without a restart; a revoked one stops working.
    let newbie = add_key(&keys, "newbie", "user", &[]);
    wait_status(&newbie, 200);
    let out = keys_cmd(&[
        "revoke",
        "--file",
        keys.to_str().unwrap(),
        "--user",
        "newbie",
    ]);
    assert!(out.status.success());
    wait_status(&newbie, 401);

    // SIGHUP reloads (counted in /admin/config) even without a file change.
    let reloads = || {
        call(&base, "GET", "/admin/config", Some(&admin), "", "cfg").json()["auth"]["reloads"]
            .as_u64()
            .unwrap()
    };
    let before = reloads();
    // SAFETY: signalling the server child this test started.
    assert_eq!(unsafe { libc::kill(s.pid() as i32, libc::SIGHUP) }, 0);
    let t0 = Instant::now();
    while reloads() == before {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload: {}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // (The log line follows the counter; the harness reads stderr on its own thread.)
    serve_support::wait_until(10, "the SIGHUP log line", || {
        s.log().contains("keys reloaded (SIGHUP)")
    });

    // A broken file keeps the old keys (and says why).
    std::fs::write(&keys, "this is not toml [").unwrap();
    let t0 = Instant::now();
    while !s.log().contains("keys reload failed") {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        call(&base, "GET", "/v1/models", Some(&steady), "", "after-bad").status,
        200
    );

    stop.store(true, Ordering::Relaxed);
    load.join().expect("no request failed during reloads");
    assert!(
        done.load(Ordering::Relaxed) >= 2,
        "too few requests ran during the reloads"
    );
}

#[test]
fn keys_cli_prints_once_lists_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("k.toml");
    let f = keys.to_str().unwrap();
    let k = add_key(
        &keys,
        "alice",
        "admin",
        &["--tier", "vip", "--requests-per-min", "60"],
    );
    let out = keys_cmd(&["list", "--file", f]);
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains("alice") && listing.contains("vip") && listing.contains("60"));
    assert!(
        !listing.contains(&k[4..16 + 4]) || listing.contains(&k[4..16]),
        "id only"
    );
    assert!(
        !listing.contains(&k[17..]),
        "the secret is never shown again"
    );
    assert!(!std::fs::read_to_string(&keys).unwrap().contains(&k[17..]));
    let out = keys_cmd(&["add", "--file", f, "--user", "x", "--role", "root"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role `root`"));
    let out = keys_cmd(&["revoke", "--file", f, "--user", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key belongs to `nobody`"));
    let out = keys_cmd(&["revoke", "--file", f, "--user", "alice"]);
    assert!(out.status.success());
    let listing = String::from_utf8(keys_cmd(&["list", "--file", f]).stdout).unwrap();
    assert!(!listing.contains("alice"));
    std::fs::write(&keys, "[[keys]]\nuser = 1\n").unwrap();
    let out = keys_cmd(&["list", "--file", f]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("k.toml"), "{err}");
}

#[test]
fn open_server_needs_loopback_or_explicit_permission() {
    let Some(model) = serve_support::model() else {
        eprintln!("SKIP: smollm2.gguf missing (scripts/fetch-models.sh)");
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_r1serve"))
        .args(["serve", "--model"])
        .arg(&model)
        .args(["--host", "0.0.0.0", "--port", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--allow-unauthenticated") && err.contains("0.0.0.0"),
        "{err}"
    );
    // On loopback it runs, open, and says so loudly.
    let s = Server::start(&[]).unwrap();
    assert!(s.log().contains("WARNING: NO API KEYS"), "{}", s.log());
    assert_eq!(
        call(&s.base, "GET", "/admin/config", None, "", "open").status,
        200
    );
}
