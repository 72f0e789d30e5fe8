//! Which files of a repository listing to fetch: the default set, `--include` globs,
//! `--file` names, and the parts of a split GGUF.

use super::*;

pub(super) fn select_files(args: &PullArgs, listing: &RepoListing) -> Result<Vec<Sibling>> {
    let what = format!("{}@{}", args.repo, args.revision);
    let names = || {
        let mut all: Vec<&str> = listing
            .siblings
            .iter()
            .map(|s| s.rfilename.as_str())
            .collect();
        all.sort();
        let n = all.len();
        let mut s = all.into_iter().take(20).collect::<Vec<_>>().join(", ");
        if n > 20 {
            s.push_str(&format!(", … ({} more)", n - 20));
        }
        if s.is_empty() {
            s = "no files at all".into();
        }
        s
    };
    let mut chosen: Vec<Sibling> = Vec::new();
    fn take(chosen: &mut Vec<Sibling>, s: &Sibling) {
        if !chosen.iter().any(|c| c.rfilename == s.rfilename) {
            chosen.push(s.clone());
        }
    }

    if args.files.is_empty() && args.include.is_empty() {
        for s in &listing.siblings {
            let top_level = !s.rfilename.contains('/');
            if top_level && DEFAULT_FILES.iter().any(|p| glob_match(p, &s.rfilename)) {
                take(&mut chosen, s);
            }
        }
        let has_weights = chosen.iter().any(|s| s.rfilename.ends_with(".safetensors"));
        if !has_weights {
            let ggufs: Vec<&str> = listing
                .siblings
                .iter()
                .map(|s| s.rfilename.as_str())
                .filter(|n| n.ends_with(".gguf"))
                .collect();
            if !ggufs.is_empty() {
                let list: Vec<&str> = ggufs.iter().take(12).copied().collect();
                bail!(
                    "{what} has no *.safetensors weights but {} GGUF file{} ({}{}); \
                     pick one with --file NAME or --include GLOB",
                    ggufs.len(),
                    if ggufs.len() == 1 { "" } else { "s" },
                    list.join(", "),
                    if ggufs.len() > 12 { ", …" } else { "" }
                );
            }
            bail!(
                "{what} has no *.safetensors or *.gguf weights (files: {}); \
                 choose files with --include GLOB or --file NAME",
                names()
            );
        }
    } else {
        for f in &args.files {
            match listing.siblings.iter().find(|s| &s.rfilename == f) {
                Some(s) => take(&mut chosen, s),
                None => bail!("{what} has no file {f:?} (files: {})", names()),
            }
        }
        for pat in &args.include {
            let before = chosen.len();
            let mut matched = false;
            for s in &listing.siblings {
                if glob_match(pat, &s.rfilename) {
                    matched = true;
                    take(&mut chosen, s);
                }
            }
            if !matched && chosen.len() == before {
                bail!(
                    "no file in {what} matches --include {pat:?} (files: {})",
                    names()
                );
            }
        }
    }
    // A model split by llama.cpp's gguf-split is useless without all its parts: asking for
    // one of them (`--file X-00001-of-00003.gguf`, or a glob matching it) fetches them all.
    let splits: Vec<(String, u16)> = chosen
        .iter()
        .filter_map(|s| parse_split_name(&s.rfilename))
        .filter(|&(_, _, count)| count > 1)
        .map(|(prefix, _, count)| (prefix.to_string(), count))
        .collect();
    for (prefix, count) in splits {
        for no in 1..=count {
            let name = split_file_name(&prefix, no, count);
            match listing.siblings.iter().find(|s| s.rfilename == name) {
                Some(s) => take(&mut chosen, s),
                None => bail!(
                    "{what} has no {name}: the split model {} needs all {count} parts",
                    split_file_name(&prefix, 1, count)
                ),
            }
        }
    }
    for s in &chosen {
        if !is_safe_file_name(&s.rfilename) {
            bail!(
                "{what}: refusing to write the file name {:?} (absolute or contains '..')",
                s.rfilename
            );
        }
    }
    Ok(chosen)
}

/// Where `files` are exactly the parts of one split model, the index of its first part.
pub(super) fn first_part_of_one_split(files: &[Sibling]) -> Option<usize> {
    let names: Vec<(&str, u16, u16)> = files
        .iter()
        .map(|s| parse_split_name(&s.rfilename))
        .collect::<Option<_>>()?;
    let (prefix, _, count) = *names.first()?;
    let same = names.iter().all(|&(p, _, c)| p == prefix && c == count);
    (same && names.len() == usize::from(count))
        .then(|| names.iter().position(|&(_, no, _)| no == 1))
        .flatten()
}

/// fnmatch-style glob as huggingface_hub uses it (`globset`): `*` matches any run (including
/// `/`), `?` one character, `[...]` a class, everything else itself. A pattern globset
/// cannot read matches only the name spelled the same.
pub(super) fn glob_match(pattern: &str, name: &str) -> bool {
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher().is_match(name))
        .unwrap_or(pattern == name)
}
