//! The shape of the code, checked so it stays: no circle of imports between the files of one module, and
//! no file over 500 lines (tests not counted) without a stated reason. Read from the sources; nothing runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files allowed past [`MAX_LINES`], and why.
const LONG_FILES: &[(&str, &str)] = &[
    (
        "plugins/marathon/src/app/parse.rs",
        "Marathon's app definition field by field, in the order of its schema: one reader per field group, \
         and splitting them would scatter one table",
    ),
    (
        "plugins/marathon/src/model.rs",
        "the framework's stored records and their one mapping to the store: they change together",
    ),
    (
        "plugins/proportional/src/policy.rs",
        "one algorithm (weighted DRF with progressive filling), compiled both natively and to wasm, whose \
         steps share its working state",
    ),
];

const MAX_LINES: usize = 500;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code before its tests (`#[cfg(test)]` at the start of a line).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("\n#[cfg(test)]") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["host/src", "proto/src", "plugin-sdk/src", "plugins/marathon/src", "plugins/proportional/src"]
    {
        rust_files(&root().join(dir), &mut files);
    }
    files.sort();
    files
}

#[test]
fn no_file_is_long_without_a_reason() {
    let mut long = Vec::new();
    for path in sources() {
        let name = path.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        let lines = code(&path).lines().count();
        let allowed = LONG_FILES.iter().any(|(file, _)| *file == name);
        if lines > MAX_LINES && !allowed {
            long.push(format!("{name}: {lines} lines"));
        }
        if allowed && lines <= MAX_LINES {
            long.push(format!("{name} is {lines} lines now: take it off LONG_FILES"));
        }
    }
    assert!(long.is_empty(), "over {MAX_LINES} lines without a reason in LONG_FILES:\n{}", long.join("\n"));
}

/// The sibling files each file of `dir` uses (`super::x`, or `crate::<module>::x`), `mod.rs` aside.
fn sibling_imports(dir: &Path, module: &str) -> BTreeMap<String, BTreeSet<String>> {
    let siblings: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let stem = p.file_stem()?.to_string_lossy().into_owned();
            let is_module = p.is_dir() || p.extension().is_some_and(|e| e == "rs");
            (is_module && stem != "mod").then_some(stem)
        })
        .collect();
    let mut graph = BTreeMap::new();
    for name in &siblings {
        let file = dir.join(format!("{name}.rs"));
        let file = if file.exists() { file } else { dir.join(name).join("mod.rs") };
        if !file.exists() {
            continue;
        }
        let text = code(&file);
        let uses: BTreeSet<String> = siblings
            .iter()
            .filter(|other| *other != name)
            .filter(|other| {
                let via_super = format!("super::{other}");
                let via_crate = format!("crate::{module}::{other}");
                let mentions = |needle: &str| {
                    text.match_indices(needle).any(|(at, _)| {
                        let next = text[at + needle.len()..].chars().next();
                        !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    })
                };
                mentions(&via_super) || (!module.is_empty() && mentions(&via_crate))
            })
            .cloned()
            .collect();
        // `use super::{a, b}` lists too.
        let mut uses = uses;
        for list in text.split("super::{").skip(1) {
            let inside = list.split('}').next().unwrap_or_default();
            for item in inside.split(',') {
                let item = item.trim().split("::").next().unwrap_or_default().trim();
                if siblings.contains(item) && item != name {
                    uses.insert(item.to_string());
                }
            }
        }
        graph.insert(name.clone(), uses);
    }
    graph
}

/// A circle in `graph`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_circle_of_imports_between_the_files_of_a_module() {
    let mut dirs = Vec::new();
    for (base, krate) in [("host/src", ""), ("plugins/marathon/src", "")] {
        let mut stack = vec![root().join(base)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                }
            }
            let module = dir.strip_prefix(root().join(base)).unwrap().to_string_lossy().replace('/', "::");
            dirs.push((dir, if module.is_empty() { krate.to_string() } else { module }));
        }
    }
    let mut circles = Vec::new();
    for (dir, module) in &dirs {
        let graph = sibling_imports(dir, module);
        if let Some(found) = circle(&graph) {
            circles.push(format!("{}: {}", dir.strip_prefix(root()).unwrap().display(), found.join(" → ")));
        }
    }
    assert!(circles.is_empty(), "circles of imports:\n{}", circles.join("\n"));
}

#[test]
fn the_circle_finder_finds_circles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(circle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    let line: BTreeMap<String, BTreeSet<String>> =
        [("a".to_string(), BTreeSet::from(["b".to_string()])), ("b".to_string(), BTreeSet::new())].into();
    assert_eq!(circle(&line), None);
}
