//! `r1serve pull` against a fake Hugging Face hub served on 127.0.0.1 from inside the test.
//!
//! The fake hub speaks the endpoints hf-hub (sync/ureq) uses:
//! - `GET /api/models/{repo}/revision/{rev}[?blobs=true]`: `{"sha", "siblings": [{rfilename,
//!   size, blobId, lfs: {sha256, size}}]}`; unknown repo: 404 + `X-Error-Code: RepoNotFound`;
//!   private repo without the token: 401.
//! - `GET /{repo}/resolve/{rev}/{file}`: small files directly (ETag = git blob sha1,
//!   X-Repo-Commit, Content-Range on ranged requests); LFS files as the real hub does it, a 302 to
//!   an absolute CDN URL carrying X-Linked-Etag (sha256), X-Linked-Size and X-Repo-Commit.
//! - `GET /cdn/{sha256}`: the bytes, honouring `Range: bytes=a-` / `bytes=a-b`.
//!
//! Every request is logged so tests can check what was (not) fetched and how ranges were used.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha1::Sha1;
use sha2::{Digest, Sha256};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_test_secret";

#[derive(Clone)]
struct FakeFile {
    name: String,
    data: Vec<u8>,
    lfs: bool,
    /// Serve these bytes instead of `data` (while listing `data`'s hash and size).
    served: Option<Vec<u8>>,
}

#[derive(Clone, Default)]
struct FakeRepo {
    files: Vec<FakeFile>,
    private: bool,
}

struct Hub {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    /// While set, CDN answers send half their body and then drop the connection.
    flaky: Arc<AtomicBool>,
}

impl Hub {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
    fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn git_sha1_hex(data: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn start_hub(repos: HashMap<String, FakeRepo>) -> Hub {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let flaky = Arc::new(AtomicBool::new(false));
    let repos = Arc::new(repos);
    let (log2, flaky2) = (log.clone(), flaky.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let repos = repos.clone();
            let log = log2.clone();
            let flaky = flaky2.clone();
            std::thread::spawn(move || {
                let _ = serve_connection(stream, port, &repos, &log, &flaky);
            });
        }
    });
    Hub { port, log, flaky }
}

struct Request {
    path: String,
    headers: HashMap<String, String>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let _method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Ok(Some(Request { path, headers }))
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    headers: &[(String, String)],
    body: &[u8],
    cut: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if cut {
        // Half the promised body, then the connection drops (a network failure mid-file).
        stream.write_all(&body[..body.len() / 2])?;
        stream.flush()?;
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return Err(std::io::Error::other("cut"));
    }
    stream.write_all(body)?;
    stream.flush()
}

fn serve_connection(
    stream: TcpStream,
    port: u16,
    repos: &HashMap<String, FakeRepo>,
    log: &Mutex<Vec<String>>,
    flaky: &AtomicBool,
) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_request(&mut reader)? {
        let range = req.headers.get("range").cloned();
        log.lock().unwrap().push(match &range {
            Some(r) => format!("GET {} [{r}]", req.path),
            None => format!("GET {}", req.path),
        });
        let (status, reason, headers, body) = route(&req, port, repos);
        let cut =
            flaky.load(Ordering::SeqCst) && req.path.starts_with("/cdn/") && body.len() > 1024;
        respond(&mut writer, status, reason, &headers, &body, cut)?;
    }
    Ok(())
}

type Reply = (u16, &'static str, Vec<(String, String)>, Vec<u8>);

fn error_reply(status: u16, reason: &'static str, code: &str, msg: &str) -> Reply {
    (
        status,
        reason,
        vec![
            ("X-Error-Code".into(), code.into()),
            ("X-Error-Message".into(), msg.into()),
            ("Content-Type".into(), "application/json".into()),
        ],
        format!("{{\"error\":\"{msg}\"}}").into_bytes(),
    )
}

fn ranged(data: &[u8], range: Option<&String>, mut headers: Vec<(String, String)>) -> Reply {
    let total = data.len();
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return (200, "OK", headers, data.to_vec());
    };
    let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
    let start: usize = a.parse().unwrap_or(0);
    let end: usize = if b.is_empty() {
        total.saturating_sub(1)
    } else {
        b.parse::<usize>().unwrap_or(total - 1).min(total - 1)
    };
    if start >= total || start > end {
        headers.push(("Content-Range".into(), format!("bytes */{total}")));
        return (416, "Range Not Satisfiable", headers, Vec::new());
    }
    headers.push((
        "Content-Range".into(),
        format!("bytes {start}-{end}/{total}"),
    ));
    (206, "Partial Content", headers, data[start..=end].to_vec())
}

fn route(req: &Request, port: u16, repos: &HashMap<String, FakeRepo>) -> Reply {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let authorized =
        req.headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"));
    let find_repo = |name: &str| -> Result<&FakeRepo, Reply> {
        match repos.get(name) {
            Some(r) if r.private && !authorized => Err(error_reply(
                401,
                "Unauthorized",
                "RepoNotFound",
                "Repository not found",
            )),
            Some(r) => Ok(r),
            None => Err(error_reply(
                404,
                "Not Found",
                "RepoNotFound",
                "Repository not found",
            )),
        }
    };
    let rev_ok = |rev: &str| rev == "main" || rev == COMMIT;

    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((name, rev)) = rest.split_once("/revision/") else {
            return error_reply(400, "Bad Request", "BadRequest", "bad api path");
        };
        let repo = match find_repo(name) {
            Ok(r) => r,
            Err(e) => return e,
        };
        if !rev_ok(rev) {
            return error_reply(404, "Not Found", "RevisionNotFound", "Invalid rev id");
        }
        let blobs = query.contains("blobs=true");
        let siblings: Vec<serde_json::Value> = repo
            .files
            .iter()
            .map(|f| {
                let mut v = serde_json::json!({ "rfilename": f.name });
                if blobs {
                    v["size"] = f.data.len().into();
                    v["blobId"] = git_sha1_hex(&f.data).into();
                    if f.lfs {
                        v["lfs"] = serde_json::json!({
                            "sha256": sha256_hex(&f.data),
                            "size": f.data.len(),
                            "pointerSize": 134
                        });
                    }
                }
                v
            })
            .collect();
        let body = serde_json::json!({
            "_id": "fake", "id": name, "modelId": name, "sha": COMMIT,
            "private": repo.private, "siblings": siblings,
        });
        return (
            200,
            "OK",
            vec![("Content-Type".into(), "application/json".into())],
            body.to_string().into_bytes(),
        );
    }

    if let Some(sha) = path.strip_prefix("/cdn/") {
        for repo in repos.values() {
            for f in &repo.files {
                if f.lfs && sha256_hex(&f.data) == sha {
                    let bytes = f.served.as_ref().unwrap_or(&f.data);
                    return ranged(bytes, req.headers.get("range"), vec![]);
                }
            }
        }
        return error_reply(404, "Not Found", "EntryNotFound", "no such blob");
    }

    if let Some(idx) = path.find("/resolve/") {
        let name = &path[1..idx];
        let rest = &path[idx + "/resolve/".len()..];
        let Some((rev, file)) = rest.split_once('/') else {
            return error_reply(400, "Bad Request", "BadRequest", "bad resolve path");
        };
        let repo = match find_repo(name) {
            Ok(r) => r,
            Err(e) => return e,
        };
        if !rev_ok(rev) {
            return error_reply(404, "Not Found", "RevisionNotFound", "Invalid rev id");
        }
        let Some(f) = repo.files.iter().find(|f| f.name == file) else {
            return error_reply(
                404,
                "Not Found",
                "EntryNotFound",
                &format!("{file} does not exist on \"{rev}\""),
            );
        };
        let git = git_sha1_hex(&f.data);
        if f.lfs {
            let sha = sha256_hex(&f.data);
            return (
                302,
                "Found",
                vec![
                    (
                        "Location".into(),
                        format!("http://127.0.0.1:{port}/cdn/{sha}"),
                    ),
                    ("ETag".into(), format!("\"{git}\"")),
                    ("X-Linked-Etag".into(), format!("\"{sha}\"")),
                    ("X-Linked-Size".into(), f.data.len().to_string()),
                    ("X-Repo-Commit".into(), COMMIT.into()),
                ],
                Vec::new(),
            );
        }
        let bytes = f.served.as_ref().unwrap_or(&f.data);
        return ranged(
            bytes,
            req.headers.get("range"),
            vec![
                ("ETag".into(), format!("\"{git}\"")),
                ("X-Repo-Commit".into(), COMMIT.into()),
            ],
        );
    }
    error_reply(404, "Not Found", "NotFound", "no route")
}

fn text(name: &str, s: &str) -> FakeFile {
    FakeFile {
        name: name.into(),
        data: s.as_bytes().to_vec(),
        lfs: false,
        served: None,
    }
}

fn lfs(name: &str, data: Vec<u8>) -> FakeFile {
    FakeFile {
        name: name.into(),
        data,
        lfs: true,
        served: None,
    }
}

/// The repos of the fake hub.
fn fake_hub() -> (Hub, HashMap<String, FakeRepo>) {
    let mut repos = HashMap::new();
    let model = FakeRepo {
        files: vec![
            text(".gitattributes", "*.safetensors filter=lfs\n"),
            text("README.md", "# tiny model\n"),
            text(
                "config.json",
                r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":64}"#,
            ),
            text("generation_config.json", r#"{"do_sample":false}"#),
            text(
                "tokenizer.json",
                r#"{"version":"1.0","model":{"type":"BPE"}}"#,
            ),
            text("tokenizer_config.json", r#"{"add_bos_token":false}"#),
            text("model.safetensors.index.json", r#"{"weight_map":{}}"#),
            lfs(
                "model-00001-of-00002.safetensors",
                pseudo_random(3 << 20, 1),
            ),
            lfs(
                "model-00002-of-00002.safetensors",
                pseudo_random(1 << 20, 2),
            ),
            lfs("tiny-Q4_K_M.gguf", pseudo_random(2 << 20, 3)),
            lfs("tiny-Q8_0.gguf", pseudo_random(1 << 20, 4)),
        ],
        private: false,
    };
    repos.insert("test-org/tiny-model".to_string(), model);
    repos.insert(
        "test-org/gguf-only".to_string(),
        FakeRepo {
            files: vec![
                text("README.md", "gguf only\n"),
                lfs("gguf-only-Q4_0.gguf", pseudo_random(1 << 20, 5)),
            ],
            private: false,
        },
    );
    repos.insert(
        "test-org/private".to_string(),
        FakeRepo {
            files: vec![
                text("config.json", "{}"),
                lfs("model.safetensors", pseudo_random(100_000, 6)),
            ],
            private: true,
        },
    );
    let good = pseudo_random(500_000, 7);
    let mut bad = good.clone();
    bad[123_456] ^= 0xff;
    repos.insert(
        "test-org/corrupt".to_string(),
        FakeRepo {
            files: vec![
                text("config.json", "{}"),
                FakeFile {
                    name: "model.safetensors".into(),
                    data: good,
                    lfs: true,
                    served: Some(bad),
                },
            ],
            private: false,
        },
    );
    // A GGUF split by llama.cpp's gguf-split, in a subfolder as the big R1 repos have them,
    // next to a whole file; and a split whose part 2 is not there.
    let mut split_files = vec![text("README.md", "split\n")];
    for i in 1..=3u64 {
        split_files.push(lfs(
            &format!("Q4_K_M/big-Q4_K_M-0000{i}-of-00003.gguf"),
            pseudo_random(300_000 + i as usize, 10 + i),
        ));
    }
    split_files.push(lfs("big-Q8_0.gguf", pseudo_random(200_000, 20)));
    repos.insert(
        "test-org/split-gguf".to_string(),
        FakeRepo {
            files: split_files,
            private: false,
        },
    );
    repos.insert(
        "test-org/split-broken".to_string(),
        FakeRepo {
            files: vec![
                lfs("b-00001-of-00003.gguf", pseudo_random(1000, 30)),
                lfs("b-00003-of-00003.gguf", pseudo_random(1000, 31)),
            ],
            private: false,
        },
    );
    (start_hub(repos.clone()), repos)
}

fn pull(hub_endpoint: &str, hf_home: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_r1serve"));
    cmd.arg("pull").args(args);
    cmd.env("HF_ENDPOINT", hub_endpoint).env("HF_HOME", hf_home);
    for v in [
        "HF_TOKEN",
        "HF_HUB_CACHE",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "RUST_BACKTRACE",
        "RUST_LIB_BACKTRACE",
    ] {
        cmd.env_remove(v);
    }
    if let Some(t) = token {
        cmd.env("HF_TOKEN", t);
    }
    cmd.output().expect("run r1serve")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn assert_ok(o: &Output) {
    eprintln!("pull ok: {}\n{}", stdout(o), stderr(o).trim());
    assert!(
        o.status.success(),
        "pull failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

fn assert_fails_with(o: &Output, needles: &[&str]) {
    assert!(
        !o.status.success(),
        "pull should have failed\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    let err = stderr(o);
    eprintln!("pull failed as expected: {}", err.trim());
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    assert!(!err.contains("panicked"), "panic:\n{err}");
}

fn file_of<'a>(repos: &'a HashMap<String, FakeRepo>, repo: &str, name: &str) -> &'a [u8] {
    &repos[repo]
        .files
        .iter()
        .find(|f| f.name == name)
        .unwrap()
        .data
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn snapshot(hf_home: &Path, repo: &str) -> PathBuf {
    hf_home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("snapshots")
        .join(COMMIT)
}

#[test]
fn default_selection_into_hf_cache_then_cached() {
    let (hub, repos) = fake_hub();
    let home = tempfile::tempdir().unwrap();
    let repo = "test-org/tiny-model";

    let o = pull(&hub.endpoint(), home.path(), None, &[repo]);
    assert_ok(&o);
    let snap = snapshot(home.path(), repo);
    assert_eq!(PathBuf::from(stdout(&o)), snap, "prints the snapshot dir");
    let expected = [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    for name in expected {
        let got = std::fs::read(snap.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == file_of(&repos, repo, name), "{name}: bytes differ");
    }
    for name in [
        "README.md",
        ".gitattributes",
        "tiny-Q4_K_M.gguf",
        "tiny-Q8_0.gguf",
    ] {
        assert!(
            !snap.join(name).exists(),
            "{name} should not be fetched by default"
        );
    }
    // HF cache layout: refs/main holds the commit, blobs are named by sha256 (LFS) or git sha1.
    let folder = home.path().join("hub/models--test-org--tiny-model");
    assert_eq!(
        std::fs::read_to_string(folder.join("refs/main")).unwrap(),
        COMMIT
    );
    let big = file_of(&repos, repo, "model-00001-of-00002.safetensors");
    assert!(folder.join("blobs").join(sha256_hex(big)).is_file());
    assert!(folder
        .join("blobs")
        .join(git_sha1_hex(file_of(&repos, repo, "config.json")))
        .is_file());
    // Nothing half-written is left anywhere.
    for p in all_files(home.path()) {
        let s = p.to_string_lossy();
        assert!(
            !s.ends_with(".part") && !s.contains("incomplete"),
            "left over: {s}"
        );
    }
    // The LFS downloads went through the CDN redirect.
    assert!(hub.requests().iter().any(|r| r.starts_with("GET /cdn/")));

    // Second pull: everything is already present, no file is fetched again.
    hub.clear_log();
    let o2 = pull(&hub.endpoint(), home.path(), None, &[repo]);
    assert_ok(&o2);
    assert_eq!(stdout(&o2), stdout(&o));
    let reqs = hub.requests();
    assert!(
        reqs.iter().all(|r| r.starts_with("GET /api/models/")),
        "second pull fetched files again: {reqs:?}"
    );
    assert!(stderr(&o2).contains("already present"), "{}", stderr(&o2));

    // A corrupted cached copy (same size) is detected with --verify and fetched again.
    let blob = std::fs::canonicalize(snap.join("model-00002-of-00002.safetensors")).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let o3 = pull(&hub.endpoint(), home.path(), None, &[repo, "--verify"]);
    assert_ok(&o3);
    let got = std::fs::read(snap.join("model-00002-of-00002.safetensors")).unwrap();
    assert!(got == file_of(&repos, repo, "model-00002-of-00002.safetensors"));
}

#[test]
fn single_gguf_file_into_dir() {
    let (hub, repos) = fake_hub();
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("models");
    let repo = "test-org/tiny-model";
    let o = pull(
        &hub.endpoint(),
        home.path(),
        None,
        &[
            repo,
            "--file",
            "tiny-Q4_K_M.gguf",
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let path = dir.join("tiny-Q4_K_M.gguf");
    assert_eq!(PathBuf::from(stdout(&o)), path, "prints the file");
    assert!(std::fs::read(&path).unwrap() == file_of(&repos, repo, "tiny-Q4_K_M.gguf"));
    assert!(!dir.join("tiny-Q8_0.gguf").exists());
    assert!(!dir.join("config.json").exists());
    // --dir does not touch the HF cache.
    assert!(!home
        .path()
        .join("hub/models--test-org--tiny-model")
        .exists());

    // Relative --dir works too (hf-hub needs absolute cache paths; pull resolves it).
    let o = Command::new(env!("CARGO_BIN_EXE_r1serve"))
        .current_dir(out.path())
        .args(["pull", repo, "--include", "*Q8_0.gguf", "--dir", "rel"])
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HOME", home.path())
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    assert_ok(&o);
    let got = std::fs::read(out.path().join("rel/tiny-Q8_0.gguf")).unwrap();
    assert!(got == file_of(&repos, repo, "tiny-Q8_0.gguf"));
}

#[test]
fn include_glob_into_hf_cache() {
    let (hub, repos) = fake_hub();
    let home = tempfile::tempdir().unwrap();
    let repo = "test-org/gguf-only";
    let o = pull(
        &hub.endpoint(),
        home.path(),
        None,
        &[repo, "--include", "*.gguf"],
    );
    assert_ok(&o);
    let path = snapshot(home.path(), repo).join("gguf-only-Q4_0.gguf");
    assert_eq!(PathBuf::from(stdout(&o)), path);
    assert!(std::fs::read(&path).unwrap() == file_of(&repos, repo, "gguf-only-Q4_0.gguf"));
}

#[test]
fn resumes_a_partial_download() {
    let (hub, repos) = fake_hub();
    let home = tempfile::tempdir().unwrap();
    let repo = "test-org/tiny-model";
    let name = "tiny-Q4_K_M.gguf";
    let data = file_of(&repos, repo, name);
    let sha = sha256_hex(data);
    let blobs = home.path().join("hub/models--test-org--tiny-model/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let half = data.len() / 2;
    std::fs::write(blobs.join(format!("{sha}.part")), &data[..half]).unwrap();

    let o = pull(&hub.endpoint(), home.path(), None, &[repo, "--file", name]);
    assert_ok(&o);
    let got = std::fs::read(stdout(&o)).unwrap();
    assert!(got == data, "resumed file differs");
    let reqs = hub.requests();
    let want = format!("GET /cdn/{sha} [bytes={half}-]");
    assert!(
        reqs.contains(&want),
        "no ranged resume request {want:?} in {reqs:?}"
    );
    assert!(!blobs.join(format!("{sha}.part")).exists());
    assert!(
        stderr(&o).contains("resuming a partial download"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn dropped_connection_leaves_no_file_and_resumes_later() {
    let (hub, repos) = fake_hub();
    let home = tempfile::tempdir().unwrap();
    let repo = "test-org/tiny-model";
    let name = "tiny-Q8_0.gguf";
    let data = file_of(&repos, repo, name);
    let part = home
        .path()
        .join("hub/models--test-org--tiny-model/blobs")
        .join(format!("{}.part", sha256_hex(data)));

    // Every transfer breaks halfway: hf-hub retries (resuming each time), then pull gives up.
    hub.flaky.store(true, Ordering::SeqCst);
    let o = pull(&hub.endpoint(), home.path(), None, &[repo, "--file", name]);
    assert_fails_with(&o, &[repo, name, "run the pull again to resume"]);
    assert!(
        !snapshot(home.path(), repo).join(name).exists(),
        "half-written file exposed"
    );
    let partial = std::fs::metadata(&part)
        .expect("partial download kept")
        .len();
    assert!(
        partial > 0 && partial < data.len() as u64,
        "partial {partial}"
    );
    let ranged_retries = hub
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /cdn/") && !r.contains("[bytes=0-"))
        .count();
    assert!(
        ranged_retries >= 2,
        "retries did not resume: {:?}",
        hub.requests()
    );

    // The network is back: the next pull resumes from the partial file.
    hub.flaky.store(false, Ordering::SeqCst);
    hub.clear_log();
    let o = pull(&hub.endpoint(), home.path(), None, &[repo, "--file", name]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("resuming a partial download"),
        "{}",
        stderr(&o)
    );
    assert!(std::fs::read(stdout(&o)).unwrap() == data);
    let want = format!("GET /cdn/{} [bytes={partial}-]", sha256_hex(data));
    assert!(hub.requests().contains(&want), "{:?}", hub.requests());
    assert!(!part.exists());
}

#[test]
fn corrupt_download_is_rejected_and_removed() {
    let (hub, _repos) = fake_hub();
    let home = tempfile::tempdir().unwrap();
    let repo = "test-org/corrupt";
    let o = pull(&hub.endpoint(), home.path(), None, &[repo]);
    assert_fails_with(&o, &[repo, "model.safetensors", "sha256 mismatch"]);
    assert!(!snapshot(home.path(), repo)
        .join("model.safetensors")
        .exists());
    for p in all_files(&home.path().join("hub/models--test-org--corrupt/blobs")) {
        let s = p.to_string_lossy().to_string();
        assert!(
            s.ends_with(".lock") || s.ends_with(&git_sha1_hex(b"{}")),
            "left over: {s}"
        );
    }
}

#[test]
fn private_repo_needs_token() {
    let (hub, repos) = fake_hub();
    let home = tempfile::tempdir().unwrap();
    let repo = "test-org/private";
    let o = pull(&hub.endpoint(), home.path(), None, &[repo]);
    assert_fails_with(&o, &[repo, "HF_TOKEN", "401"]);

    let o = pull(&hub.endpoint(), home.path(), Some("wrong"), &[repo]);
    assert_fails_with(&o, &[repo, "HF_TOKEN", "denied"]);

    let o = pull(&hub.endpoint(), home.path(), Some(TOKEN), &[repo]);
    assert_ok(&o);
    let got = std::fs::read(snapshot(home.path(), repo).join("model.safetensors")).unwrap();
    assert!(got == file_of(&repos, repo, "model.safetensors"));
}

#[test]
fn clear_errors() {
    let (hub, _repos) = fake_hub();
    let home = tempfile::tempdir().unwrap();
    let e = hub.endpoint();

    // Unknown repo: 404.
    let o = pull(&e, home.path(), None, &["nobody/missing-model"]);
    assert_fails_with(&o, &["nobody/missing-model", "not found"]);
    assert!(!home
        .path()
        .join("hub/models--nobody--missing-model/snapshots")
        .exists());

    // Unknown revision.
    let o = pull(
        &e,
        home.path(),
        None,
        &["test-org/tiny-model", "--revision", "v9"],
    );
    assert_fails_with(&o, &["test-org/tiny-model", "revision v9 not found"]);

    // Unknown file / glob matching nothing.
    let o = pull(
        &e,
        home.path(),
        None,
        &["test-org/tiny-model", "--file", "nope.gguf"],
    );
    assert_fails_with(
        &o,
        &["test-org/tiny-model", "nope.gguf", "tiny-Q4_K_M.gguf"],
    );
    let o = pull(
        &e,
        home.path(),
        None,
        &["test-org/tiny-model", "--include", "*.bin"],
    );
    assert_fails_with(&o, &["test-org/tiny-model", "*.bin"]);

    // Default selection on a GGUF-only repo points at --file.
    let o = pull(&e, home.path(), None, &["test-org/gguf-only"]);
    assert_fails_with(&o, &["test-org/gguf-only", "gguf-only-Q4_0.gguf", "--file"]);

    // Bad repo id.
    let o = pull(&e, home.path(), None, &["../etc"]);
    assert_fails_with(&o, &["invalid repository id"]);

    // Network down: nothing listens on this port.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let o = pull(
        &format!("http://127.0.0.1:{dead_port}"),
        home.path(),
        None,
        &["test-org/tiny-model"],
    );
    assert_fails_with(&o, &["test-org/tiny-model", "cannot reach"]);
}

#[test]
fn split_gguf_pulls_every_part() {
    let (hub, repos) = fake_hub();
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let repo = "test-org/split-gguf";
    let part = |i: u32| format!("Q4_K_M/big-Q4_K_M-0000{i}-of-00003.gguf");

    // --file names the first part: all three come, and the first is printed (to pass to --model).
    let dir = out.path().join("m");
    let o = pull(
        &hub.endpoint(),
        home.path(),
        None,
        &[repo, "--file", &part(1), "--dir", dir.to_str().unwrap()],
    );
    assert_ok(&o);
    assert_eq!(PathBuf::from(stdout(&o)), dir.join(part(1)));
    for i in 1..=3 {
        let got = std::fs::read(dir.join(part(i))).unwrap_or_else(|e| panic!("{}: {e}", part(i)));
        assert!(
            got == file_of(&repos, repo, &part(i)),
            "{}: bytes differ",
            part(i)
        );
    }
    assert!(!dir.join("big-Q8_0.gguf").exists());
    assert!(stderr(&o).contains("pulling 3 files"), "{}", stderr(&o));

    // A glob matching only a later part does the same, into the HF cache.
    let o = pull(
        &hub.endpoint(),
        home.path(),
        None,
        &[repo, "--include", "*-00002-of-00003.gguf"],
    );
    assert_ok(&o);
    let snap = snapshot(home.path(), repo);
    assert_eq!(PathBuf::from(stdout(&o)), snap.join(part(1)));
    for i in 1..=3 {
        assert!(std::fs::read(snap.join(part(i))).unwrap() == file_of(&repos, repo, &part(i)));
    }

    // Parts and a whole file: the directory is printed.
    let o = pull(
        &hub.endpoint(),
        home.path(),
        None,
        &[repo, "--include", "*.gguf"],
    );
    assert_ok(&o);
    assert_eq!(PathBuf::from(stdout(&o)), snap);

    // A part missing from the repo fails before anything is fetched, naming it.
    hub.clear_log();
    let o = pull(
        &hub.endpoint(),
        home.path(),
        None,
        &["test-org/split-broken", "--file", "b-00001-of-00003.gguf"],
    );
    assert_fails_with(
        &o,
        &["test-org/split-broken", "b-00002-of-00003.gguf", "3 parts"],
    );
    assert!(
        hub.requests()
            .iter()
            .all(|r| r.starts_with("GET /api/models/")),
        "{:?}",
        hub.requests()
    );
}
