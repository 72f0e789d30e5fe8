//! GGUF reader: real files, a writer round trip with every value type, and hostile inputs
//! (truncated, bit-flipped, lying headers) that must give errors naming the problem.

use r1_model::gguf::{GgufArray, GgufError, GgufFile, GgufValue, GgufWriter};
use r1_model::quant::GgmlType;
use r1_model::testdata;

fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.set("general.architecture", GgufValue::String("llama".into()))
        .set("u8", GgufValue::U8(7))
        .set("i8", GgufValue::I8(-7))
        .set("u16", GgufValue::U16(65535))
        .set("i16", GgufValue::I16(-300))
        .set("u32", GgufValue::U32(123456))
        .set("i32", GgufValue::I32(-123456))
        .set("u64", GgufValue::U64(1 << 40))
        .set("i64", GgufValue::I64(-(1 << 40)))
        .set("f32", GgufValue::F32(1.5))
        .set("f64", GgufValue::F64(-2.25))
        .set("bool", GgufValue::Bool(true))
        .set("str", GgufValue::String("héllo 世界".into()))
        .set(
            "nested",
            GgufValue::Array(GgufArray {
                elem_type: 9,
                values: vec![
                    GgufValue::Array(GgufArray {
                        elem_type: 4,
                        values: vec![GgufValue::U32(1), GgufValue::U32(2)],
                    }),
                    GgufValue::Array(GgufArray {
                        elem_type: 8,
                        values: vec![GgufValue::String("a".into())],
                    }),
                ],
            }),
        )
        .set(
            "empty",
            GgufValue::Array(GgufArray {
                elem_type: 6,
                values: vec![],
            }),
        );
    let f32s: Vec<u8> = (0..64).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.tensor("a.weight", GgmlType::F32, &[16, 4], f32s);
    w.tensor("b.weight", GgmlType::Q8_0, &[32, 2], vec![0u8; 2 * 34]);
    w
}

#[test]
fn writer_round_trip_keeps_every_value_type() {
    let w = sample_writer();
    let bytes = w.to_bytes();
    let f = GgufFile::from_bytes("sample.gguf", bytes).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.get("u16"), Some(&GgufValue::U16(65535)));
    assert_eq!(f.get("i64"), Some(&GgufValue::I64(-(1 << 40))));
    assert_eq!(f.get_str("str").unwrap(), "héllo 世界");
    assert_eq!(f.get_f64("f64").unwrap(), -2.25);
    assert!(f.get_bool("bool").unwrap());
    let nested = f.get_array("nested").unwrap();
    assert_eq!(nested.values.len(), 2);
    assert_eq!(
        nested.values[0].as_array().unwrap().values,
        vec![GgufValue::U32(1), GgufValue::U32(2)]
    );
    assert_eq!(f.get_array("empty").unwrap().elem_type, 6);
    let a = f.tensor("a.weight").unwrap();
    assert_eq!(
        (a.ty, a.dims.clone(), a.n_rows(), a.row_len()),
        (GgmlType::F32, vec![16, 4], 4, 16)
    );
    let data = f.tensor_data(a);
    assert_eq!(f32::from_le_bytes(data[4 * 63..].try_into().unwrap()), 63.0);
    assert_eq!(f.tensor("b.weight").unwrap().size_bytes, 68);
    // Wrong-typed access names the key.
    let e = f.get_str("u32").unwrap_err().to_string();
    assert!(
        e.contains("sample.gguf") && e.contains("`u32`") && e.contains("string"),
        "{e}"
    );
    let e = f.get_u64("missing.key").unwrap_err().to_string();
    assert!(e.contains("missing.key") && e.contains("missing"), "{e}");
}

#[test]
fn every_truncation_of_a_file_is_an_error_not_a_panic() {
    let bytes = sample_writer().to_bytes();
    for cut in 0..bytes.len() {
        match GgufFile::from_bytes("cut.gguf", bytes[..cut].to_vec()) {
            Ok(_) => panic!("truncation at {cut} of {} parsed", bytes.len()),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("cut.gguf: "), "{msg}");
            }
        }
    }
}

/// A small deterministic generator (no dependency on test ordering).
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn bit_flips_never_panic() {
    let bytes = sample_writer().to_bytes();
    let mut s = 42u64;
    let mut errors = 0;
    for _ in 0..5000 {
        let mut b = bytes.clone();
        for _ in 0..1 + lcg(&mut s) % 3 {
            let i = (lcg(&mut s) as usize) % b.len();
            b[i] ^= 1 << (lcg(&mut s) % 8);
        }
        if GgufFile::from_bytes("flip.gguf", b).is_err() {
            errors += 1;
        }
    }
    // Flips in tensor data or in value payloads are legal files; flips in lengths are not.
    assert!(
        errors > 500,
        "only {errors} of 5000 corrupted files were rejected"
    );
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn err_of(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes("bad.gguf", bytes) {
        Ok(_) => panic!("hostile file parsed"),
        Err(e @ GgufError::Format { .. }) | Err(e @ GgufError::Key { .. }) => e.to_string(),
        Err(e) => panic!("unexpected error kind {e}"),
    }
}

#[test]
fn lying_headers_are_rejected_before_allocating() {
    // Counts far beyond the file size.
    let e = err_of(header(0, u64::MAX));
    assert!(e.contains("metadata_kv_count"), "{e}");
    let e = err_of(header(u64::MAX / 2, 0));
    assert!(e.contains("tensor_count"), "{e}");
    // A string length of 2^60.
    let mut b = header(0, 1);
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    b.extend_from_slice(&[0u8; 16]);
    let e = err_of(b);
    assert!(e.contains("string length"), "{e}");
    // An array claiming 2^40 u32 elements.
    let mut b = header(0, 1);
    put_str(&mut b, "arr");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let e = err_of(b);
    assert!(e.contains("array length of `arr`"), "{e}");
    // Unknown value type.
    let mut b = header(0, 1);
    put_str(&mut b, "k");
    b.extend_from_slice(&99u32.to_le_bytes());
    let e = err_of(b);
    assert!(e.contains("unknown value type 99"), "{e}");
    // Bad magic and version.
    let e = err_of(b"GGML\x03\0\0\0".to_vec());
    assert!(e.contains("not a GGUF file"), "{e}");
    let mut b = header(0, 0);
    b[4] = 9;
    assert!(err_of(b).contains("unsupported GGUF version 9"));
}

fn one_tensor(n_dims: u32, dims: &[u64], ty: u32, offset: u64, data_len: usize) -> Vec<u8> {
    let mut b = header(1, 0);
    put_str(&mut b, "t");
    b.extend_from_slice(&n_dims.to_le_bytes());
    for d in dims {
        b.extend_from_slice(&d.to_le_bytes());
    }
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32 + data_len, 0);
    b
}

#[test]
fn tensor_infos_are_checked_against_the_file() {
    assert!(GgufFile::from_bytes("ok.gguf", one_tensor(1, &[8], 0, 0, 32)).is_ok());
    let e = err_of(one_tensor(1, &[8], 0, 0, 31));
    assert!(e.contains("tensor `t`") && e.contains("truncated"), "{e}");
    let e = err_of(one_tensor(5, &[1, 1, 1, 1, 1], 0, 0, 32));
    assert!(e.contains("5 dimensions"), "{e}");
    let e = err_of(one_tensor(1, &[8], 77, 0, 32));
    assert!(e.contains("unknown ggml type id 77"), "{e}");
    let e = err_of(one_tensor(1, &[8], 0, 3, 64));
    assert!(e.contains("not aligned"), "{e}");
    let e = err_of(one_tensor(2, &[u64::MAX / 2, 4], 0, 0, 32));
    assert!(e.contains("absurd shape"), "{e}");
    // zero elements, but the row count (2^62 * 2^32) would wrap
    let e = err_of(one_tensor(3, &[0, 1 << 62, 1 << 32], 0, 0, 32));
    assert!(e.contains("absurd shape"), "{e}");
    let e = err_of(one_tensor(1, &[33], 8, 0, 64));
    assert!(e.contains("not a multiple"), "{e}");
    let e = err_of(one_tensor(1, &[8], 0, u64::MAX - 7, 32));
    assert!(e.contains("tensor `t`"), "{e}");
}

#[test]
fn real_models_parse_with_expected_metadata() {
    let Some(p) = testdata::model("smollm2.gguf") else {
        return;
    };
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u64("llama.block_count").unwrap(), 30);
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        49152
    );
    assert_eq!(f.tensors().len(), 30 * 9 + 2);
    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (emb.ty, emb.dims.clone()),
        (GgmlType::Q8_0, vec![576, 49152])
    );

    let Some(p) = testdata::model("qwen05.gguf") else {
        return;
    };
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.get_str("general.architecture").unwrap(), "qwen2");
    assert_eq!(f.tensor("output.weight").unwrap().ty, GgmlType::Q8_0);
    assert_eq!(f.tensor("token_embd.weight").unwrap().ty, GgmlType::Q5_0);
    let mut hist = std::collections::BTreeMap::new();
    for t in f.tensors() {
        *hist.entry(t.ty.name()).or_insert(0) += 1;
    }
    let want: std::collections::BTreeMap<_, _> = [
        ("Q5_0", 133),
        ("Q8_0", 13),
        ("Q6_K", 12),
        ("Q4_K", 12),
        ("F32", 121),
    ]
    .into();
    assert_eq!(hist, want);
}

#[test]
fn real_model_truncated_and_corrupted_copies_fail_cleanly() {
    let Some(p) = testdata::model("smollm2.gguf") else {
        return;
    };
    let full = std::fs::read(&p).unwrap();
    let data_start = GgufFile::open(&p).unwrap().data_offset();
    // Cuts inside the metadata (vocabulary arrays), the tensor infos and the tensor data.
    for cut in [
        10,
        100,
        5_000,
        500_000,
        data_start - 100,
        data_start + 10,
        full.len() - 1,
    ] {
        let dir = std::env::temp_dir().join(format!("r1-gguf-cut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cut.gguf");
        std::fs::write(&path, &full[..cut]).unwrap();
        let e = GgufFile::open(&path).unwrap_err().to_string();
        assert!(
            e.contains("cut.gguf") && e.contains("truncated"),
            "cut {cut}: {e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
    // Bit flips in the header region: never a panic.
    let mut s = 7u64;
    let head = &full[..data_start.min(full.len())];
    for _ in 0..300 {
        let mut b = head.to_vec();
        let i = (lcg(&mut s) as usize) % b.len();
        b[i] ^= 1 << (lcg(&mut s) % 8);
        let _ = GgufFile::from_bytes("flip.gguf", b);
    }
}
