//! Split GGUF models (llama.cpp's `llama-gguf-split --split`): a model opened through its
//! first part must list the same tensors with the same bytes, and give bit-identical logits,
//! as the file it was split from; parts that do not fit together give errors naming the file.
//!
//! The parts are written by `split::write_split`, which lays them out as gguf-split does
//! (`--split-max-tensors N`, optionally `--no-tensor-first-split`). When llama.cpp's own
//! `llama-gguf-split` is at hand, a file split by it is checked too.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use r1_model::arch::deepseek_v3::DeepSeekV3;
use r1_model::arch::llama::Llama;
use r1_model::gguf::{split, GgufError, GgufFile, GgufValue, GgufWriter, SplitError, TensorInfo};
use r1_model::{load_gguf, testdata, Batch, KvCache, Model};

/// A fresh directory per call (tests run in parallel), removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "r1serve-split-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

fn write_part(
    path: &Path,
    src: &GgufFile,
    tensors: &[&TensorInfo],
    metadata: bool,
    keys: (u16, u16, i32),
) {
    split::write_part(path, src, tensors, metadata, keys).unwrap();
}

fn write_split(
    src: &GgufFile,
    dir: &Path,
    name: &str,
    max: usize,
    empty_first: bool,
) -> Vec<PathBuf> {
    split::write_split(src, dir, name, max, empty_first).unwrap()
}

/// Same tensors, in the same order, with the same bytes; same metadata plus the split keys.
fn assert_same_model(whole: &GgufFile, split: &GgufFile) {
    assert_eq!(whole.tensors().len(), split.tensors().len());
    for (a, b) in whole.tensors().iter().zip(split.tensors()) {
        assert_eq!(a.name, b.name);
        assert_eq!((a.ty, &a.dims, a.size_bytes), (b.ty, &b.dims, b.size_bytes));
        assert!(
            whole.tensor_data(a) == split.tensor_data(b),
            "{}: bytes differ",
            a.name
        );
        assert!(split.tensor(&a.name).is_some());
    }
    for (k, v) in whole.metadata() {
        assert_eq!(split.get(k), Some(v), "metadata {k}");
    }
    let extra: Vec<&str> = split
        .metadata()
        .map(|(k, _)| k)
        .filter(|k| whole.get(k).is_none())
        .collect();
    assert_eq!(
        extra,
        [split::KEY_NO, split::KEY_TENSORS_COUNT, split::KEY_COUNT]
    );
    let sizes: usize = split.parts().map(|p| p.size_bytes).sum();
    assert_eq!(split.file_size(), sizes);
    let counts: usize = split.parts().map(|p| p.n_tensors).sum();
    assert_eq!(counts, whole.tensors().len());
}

/// Last-position logits of one prefill in a fresh cache.
fn logits(m: &dyn Model, tokens: &[u32]) -> Vec<f32> {
    const BLOCK: usize = 16;
    let n = tokens.len().div_ceil(BLOCK);
    let mut kv = KvCache::with_dtype(m.kv_layout(), BLOCK, n, m.kv_dtype());
    let mut b = Batch::default();
    b.push(tokens, 0, (0..n as u32).collect(), true);
    m.forward(&b, &mut kv).unwrap().data
}

fn assert_bit_identical(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}");
    let differ = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert_eq!(differ, 0, "{what}: {differ} of {} logits differ", a.len());
}

/// The model a file holds, built from the file mapping (no private copy, no interleaving).
fn model_from_mapping(file: GgufFile) -> Box<dyn Model> {
    let file = Arc::new(file);
    match file.get_str("general.architecture").unwrap() {
        "deepseek2" => Box::new(DeepSeekV3::from_gguf(&file, 2).unwrap()),
        _ => Box::new(Llama::load(&file, 2, &mut |_, _| {}).unwrap()),
    }
}

const PROMPT: &[u32] = &[1, 504, 3458, 282, 260, 1345, 30, 2911, 17];

/// Split `whole` several ways and check each against it: tensors, metadata, and logits
/// through both `load_gguf` (private copy, interleaved where the architecture does) and the
/// file mapping.
fn check_splits(whole_path: &Path, layouts: &[(usize, bool)]) {
    let whole = GgufFile::open(whole_path).unwrap();
    let (whole_res, whole_model) = load_gguf(whole_path, 2, &mut |_, _| {}).unwrap();
    let want = logits(whole_model.as_ref(), PROMPT);
    drop(whole_model);
    let want_mapped = logits(
        model_from_mapping(GgufFile::open(whole_path).unwrap()).as_ref(),
        PROMPT,
    );
    for &(max, empty_first) in layouts {
        let dir = temp_dir("model");
        let paths = write_split(&whole, &dir.0, "model", max, empty_first);
        let what = format!(
            "{} in {} parts of at most {max} tensors{}",
            whole_path.display(),
            paths.len(),
            if empty_first {
                ", metadata-only first part"
            } else {
                ""
            }
        );
        let f = GgufFile::open(&paths[0]).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(f.parts().len(), paths.len(), "{what}");
        for (info, p) in f.parts().zip(&paths) {
            assert_eq!(info.path, p.as_path());
            assert_eq!(info.size_bytes as u64, std::fs::metadata(p).unwrap().len());
        }
        if empty_first {
            assert_eq!(f.parts().next().unwrap().n_tensors, 0);
        }
        assert_same_model(&whole, &f);

        let (res, model) = load_gguf(&paths[0], 2, &mut |_, _| {}).unwrap();
        assert_eq!(res.is_resident(), whole_res.is_resident(), "{what}");
        assert_eq!(res.parts().len(), paths.len());
        for (a, b) in whole_res.tensors().iter().zip(res.tensors()) {
            assert_eq!(a.layout, b.layout, "{what}: {}", a.name);
        }
        assert_bit_identical(&what, &want, &logits(model.as_ref(), PROMPT));
        drop(model);
        let mapped = model_from_mapping(f);
        assert_bit_identical(
            &format!("{what}, from the mapping"),
            &want_mapped,
            &logits(mapped.as_ref(), PROMPT),
        );
        eprintln!(
            "{what}: same tensors, bit-identical logits (resident: {})",
            res.is_resident()
        );
    }
}

#[test]
fn split_llama_model_matches_the_whole_file() {
    let Some(path) = testdata::model("smollm2.gguf") else {
        return;
    };
    let n = GgufFile::open(&path).unwrap().tensors().len();
    check_splits(&path, &[(n.div_ceil(3), false), (64, true)]);
}

#[test]
fn split_deepseek2_model_matches_the_whole_file() {
    let Some(path) = testdata::fixture("deepseek2-gguf/small1-f16.gguf") else {
        eprintln!("SKIP: the deepseek2 split test needs the shared fixtures (R1SERVE_FIXTURES)");
        return;
    };
    check_splits(&path, &[(16, false), (100, true)]);
}

// ---- errors, on a small synthetic model (no fixtures needed) ----

/// A tiny GGUF with metadata and six small tensors.
fn synthetic(dir: &Path) -> GgufFile {
    let mut w = GgufWriter::new();
    w.set("general.architecture", GgufValue::String("llama".into()));
    w.set("general.name", GgufValue::String("split-test".into()));
    for i in 0..6u32 {
        let data: Vec<u8> = (0..64 * (i + 1))
            .flat_map(|x| (x as f32 + i as f32).to_le_bytes())
            .collect();
        w.tensor(
            &format!("t{i}"),
            r1_model::quant::GgmlType::F32,
            &[64, u64::from(i) + 1],
            data,
        );
    }
    let p = dir.join("whole.gguf");
    w.write(&p).unwrap();
    GgufFile::open(&p).unwrap()
}

fn split_err(path: &Path) -> (SplitError, String) {
    match GgufFile::open(path) {
        Ok(f) => panic!("{} opened with {} parts", path.display(), f.parts().len()),
        Err(GgufError::Split(e)) => {
            let msg = e.to_string();
            eprintln!("expected error: {msg}");
            (e, msg)
        }
        Err(e) => panic!("not a split error: {e}"),
    }
}

fn name_of(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn synthetic_split_opens_and_reads_every_part() {
    let dir = temp_dir("synthetic");
    let whole = synthetic(&dir.0);
    for (max, empty_first) in [(2, false), (4, false), (1, true), (6, false)] {
        let sub = dir.0.join(format!("m{max}{empty_first}"));
        std::fs::create_dir_all(&sub).unwrap();
        let paths = write_split(&whole, &sub, "m", max, empty_first);
        let f = GgufFile::open(&paths[0]).unwrap();
        assert_eq!(f.parts().len(), paths.len());
        assert_same_model(&whole, &f);
        let r = GgufFile::open_resident(&paths[0]).unwrap();
        assert_same_model(&whole, &r);
        for t in r.tensors() {
            let p = &paths[t.part];
            assert!(
                f.parts().nth(t.part).unwrap().path == p.as_path(),
                "{}",
                t.name
            );
        }
    }
    // A one-part "split" (gguf-split with everything in one file) is an ordinary file.
    let one = write_split(&whole, &dir.0, "one", 100, false);
    assert_eq!(one.len(), 1);
    assert!(one[0].ends_with("one-00001-of-00001.gguf"));
    assert_eq!(GgufFile::open(&one[0]).unwrap().parts().len(), 1);
}

#[test]
fn missing_part_is_named() {
    let dir = temp_dir("missing");
    let whole = synthetic(&dir.0);
    let paths = write_split(&whole, &dir.0, "m", 2, false);
    std::fs::remove_file(&paths[1]).unwrap();
    let (e, msg) = split_err(&paths[0]);
    assert!(
        matches!(
            e,
            SplitError::MissingPart {
                no: 2,
                count: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains(&name_of(&paths[1])), "{msg}");
    assert!(msg.contains("missing"), "{msg}");
    // Through the model loader too, with the same message.
    let err = match load_gguf(&paths[0], 1, &mut |_, _| {}) {
        Ok(_) => panic!("loaded without part 2"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&name_of(&paths[1])), "{err}");
}

#[test]
fn truncated_part_is_named() {
    let dir = temp_dir("truncated");
    let whole = synthetic(&dir.0);
    let paths = write_split(&whole, &dir.0, "m", 2, false);
    let bytes = std::fs::read(&paths[2]).unwrap();
    std::fs::write(&paths[2], &bytes[..bytes.len() - 100]).unwrap();
    let (e, msg) = split_err(&paths[0]);
    assert!(
        matches!(
            e,
            SplitError::Part {
                no: 3,
                count: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains(&name_of(&paths[2])), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
    // A header cut short too.
    std::fs::write(&paths[2], &bytes[..20]).unwrap();
    let (_, msg) = split_err(&paths[0]);
    assert!(
        msg.contains(&name_of(&paths[2])) && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn only_the_first_part_opens_a_split_model() {
    let dir = temp_dir("notfirst");
    let whole = synthetic(&dir.0);
    let paths = write_split(&whole, &dir.0, "m", 2, false);
    let (e, msg) = split_err(&paths[1]);
    assert!(
        matches!(
            e,
            SplitError::NotFirstPart {
                no: 2,
                count: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains(&name_of(&paths[1])), "{msg}");
    assert!(
        msg.contains(&name_of(&paths[0])),
        "names the first part: {msg}"
    );

    // The first part under another name: its other parts cannot be found.
    let renamed = dir.0.join("renamed.gguf");
    std::fs::copy(&paths[0], &renamed).unwrap();
    let (e, msg) = split_err(&renamed);
    assert!(matches!(e, SplitError::BadName { count: 3, .. }), "{e:?}");
    assert!(
        msg.contains(&name_of(&renamed)) && msg.contains("-00001-of-00003.gguf"),
        "{msg}"
    );

    // Bytes in memory cannot reach the other parts.
    let bytes = std::fs::read(&paths[0]).unwrap();
    match GgufFile::from_bytes("mem.gguf", bytes) {
        Err(GgufError::Split(SplitError::InMemory { .. })) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn parts_of_another_split_are_refused() {
    let dir = temp_dir("other");
    let whole = synthetic(&dir.0);
    let paths = write_split(&whole, &dir.0, "m", 2, false);
    let tensors = split::spread(&whole, 2, false);

    // split.count disagrees.
    write_part(&paths[1], &whole, &tensors[1], false, (1, 4, 6));
    let (e, msg) = split_err(&paths[0]);
    assert!(
        matches!(
            e,
            SplitError::Mismatch {
                key: "split.count",
                no: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains(&name_of(&paths[1])), "{msg}");

    // split.no disagrees: part 3 under part 2's name.
    write_part(&paths[1], &whole, &tensors[2], false, (2, 3, 6));
    let (e, msg) = split_err(&paths[0]);
    assert!(
        matches!(
            e,
            SplitError::Mismatch {
                key: "split.no",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains(&name_of(&paths[1])), "{msg}");

    // A part of a split of another model (another tensor total).
    write_part(&paths[1], &whole, &tensors[1], false, (1, 3, 9));
    let (e, _) = split_err(&paths[0]);
    assert!(
        matches!(
            e,
            SplitError::Mismatch {
                key: "split.tensors.count",
                ..
            }
        ),
        "{e:?}"
    );

    // A plain GGUF where part 2 should be.
    std::fs::copy(dir.0.join("whole.gguf"), &paths[1]).unwrap();
    let (e, msg) = split_err(&paths[0]);
    assert!(
        matches!(
            e,
            SplitError::Mismatch {
                key: "split.count",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        msg.contains("absent") && msg.contains(&name_of(&paths[1])),
        "{msg}"
    );

    // Part 2 of the same model split another way (3 tensors a part): the keys agree, but it
    // holds a tensor that part 3 holds too.
    write_part(
        &paths[1],
        &whole,
        &split::spread(&whole, 3, false)[1],
        false,
        (1, 3, 6),
    );
    let (e, msg) = split_err(&paths[0]);
    assert!(matches!(e, SplitError::DuplicateTensor { .. }), "{e:?}");
    assert!(
        msg.contains(&name_of(&paths[1])) && msg.contains(&name_of(&paths[2])),
        "{msg}"
    );
}

#[test]
fn tensor_total_and_duplicates_are_checked() {
    let dir = temp_dir("counts");
    let whole = synthetic(&dir.0);
    let t = whole.tensors();

    // split.tensors.count agrees across parts but not with what they hold.
    let paths: Vec<PathBuf> = (1..=3)
        .map(|i| dir.0.join(split::split_file_name("c", i, 3)))
        .collect();
    write_part(&paths[0], &whole, &[&t[0], &t[1]], true, (0, 3, 7));
    write_part(&paths[1], &whole, &[&t[2], &t[3]], false, (1, 3, 7));
    write_part(&paths[2], &whole, &[&t[4], &t[5]], false, (2, 3, 7));
    let (e, msg) = split_err(&paths[0]);
    assert!(
        matches!(
            e,
            SplitError::TensorCount {
                expected: 7,
                found: 6,
                count: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains(&name_of(&paths[0])), "{msg}");

    // The same tensor in two parts.
    write_part(&paths[0], &whole, &[&t[0], &t[1]], true, (0, 3, 6));
    write_part(&paths[1], &whole, &[&t[2], &t[3]], false, (1, 3, 6));
    write_part(&paths[2], &whole, &[&t[3], &t[4]], false, (2, 3, 6));
    let (e, msg) = split_err(&paths[0]);
    match &e {
        SplitError::DuplicateTensor { name, .. } => assert_eq!(name, "t3"),
        other => panic!("{other:?}"),
    }
    assert!(
        msg.contains(&name_of(&paths[2])) && msg.contains(&name_of(&paths[1])),
        "names both files: {msg}"
    );
}

// ---- a file split by llama.cpp's own tool ----

fn llama_gguf_split() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("R1SERVE_LLAMACPP_BIN").map(|d| PathBuf::from(d).join("llama-gguf-split")),
        std::env::var_os("HOME").map(|h| {
            PathBuf::from(h).join(".cache/r1serve/llama.cpp-0c1e570/bin/llama-gguf-split")
        }),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        eprintln!(
            "SKIP: llama-gguf-split not found (set R1SERVE_LLAMACPP_BIN to llama.cpp's bin \
             directory, or build it into ~/.cache/r1serve/llama.cpp-0c1e570/bin)"
        );
    }
    found
}

#[test]
fn file_split_by_llama_cpp_matches_ours() {
    let Some(tool) = llama_gguf_split() else {
        return;
    };
    let Some(path) = testdata::model("smollm2.gguf") else {
        return;
    };
    let whole = GgufFile::open(&path).unwrap();
    let (_, model) = load_gguf(&path, 2, &mut |_, _| {}).unwrap();
    let want = logits(model.as_ref(), PROMPT);
    drop(model);
    for (max, empty_first) in [(100, false), (64, true)] {
        let dir = temp_dir("llamacpp");
        let mut cmd = std::process::Command::new(&tool);
        cmd.args(["--split", "--split-max-tensors", &max.to_string()]);
        if empty_first {
            cmd.arg("--no-tensor-first-split");
        }
        let out = cmd.arg(&path).arg(dir.0.join("theirs")).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            tool.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = write_split(&whole, &dir.0, "ours", max, empty_first);
        let n = ours.len() as u16;
        let theirs: Vec<PathBuf> = (1..=n)
            .map(|i| dir.0.join(split::split_file_name("theirs", i, n)))
            .collect();
        let what =
            format!("llama-gguf-split --split-max-tensors {max} (empty first: {empty_first})");
        assert!(
            !dir.0
                .join(split::split_file_name("theirs", n + 1, n + 1))
                .exists(),
            "{what}: more parts than ours"
        );
        let f = GgufFile::open(&theirs[0]).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(f.parts().len(), n as usize, "{what}");
        assert_same_model(&whole, &f);
        drop(f);
        let (_, model) = load_gguf(&theirs[0], 2, &mut |_, _| {}).unwrap();
        assert_bit_identical(&what, &want, &logits(model.as_ref(), PROMPT));
        // Our writer lays the parts out as gguf-split does, byte for byte.
        for (a, b) in theirs.iter().zip(&ours) {
            let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
            let first_diff = x.iter().zip(&y).position(|(p, q)| p != q);
            assert!(
                x.len() == y.len() && first_diff.is_none(),
                "{what}: {} ({} bytes) and our {} ({} bytes) differ from byte {:?}",
                a.display(),
                x.len(),
                b.display(),
                y.len(),
                first_diff
            );
        }
        eprintln!("{what}: {n} parts, byte-identical to ours, bit-identical logits");
    }
}
