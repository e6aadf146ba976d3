//! The module structure, checked (ARCHITECTURE.md): no import cycle between the files of
//! `src/`, the wire protocol free of the runtime, the protocol core free of IO.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, by its path relative to `src/`, with its text up to its
/// unit tests and without comment lines.
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            let text = text
                .split("#[cfg(test)]\npub(crate) mod tests")
                .next()
                .unwrap();
            let code: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, code.join("\n"))
        })
        .collect()
}

/// The module path of a file: `actors/network.rs` -> `[actors, network]`.
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The files each file imports from (`crate::a::b::{C, d::E}` and `super::...`).
fn imports(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeMap<Vec<String>, String> =
        files.keys().map(|f| (module_of(f), f.clone())).collect();
    let resolve = |path: &[String]| {
        (1..=path.len())
            .rev()
            .find_map(|i| modules.get(&path[..i]).cloned())
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut edges = BTreeMap::new();
    for (file, code) in files {
        let me = module_of(file);
        let mut deps = BTreeSet::new();
        for (at, root) in code
            .match_indices("crate::")
            .chain(code.match_indices("super::"))
        {
            if at > 0 && code[..at].ends_with(ident) {
                continue;
            }
            let rest = &code[at + root.len()..];
            let head: String = rest
                .chars()
                .take_while(|c| ident(*c) || *c == ':')
                .collect();
            let mut base: Vec<String> = match root {
                "crate::" => Vec::new(),
                _ => me[..me.len().saturating_sub(1)].to_vec(),
            };
            base.extend(head.split("::").filter(|p| !p.is_empty()).map(String::from));
            let mut targets = vec![base.clone()];
            // A group: `{a, b::C}` right after the path.
            if let Some(group) = rest[head.len()..].strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let mut path = base.clone();
                    path.extend(
                        item.trim()
                            .split("::")
                            .filter(|p| !p.is_empty() && p.chars().all(ident))
                            .map(String::from),
                    );
                    targets.push(path);
                }
            }
            for target in targets {
                if let Some(dep) = resolve(&target) {
                    if &dep != file {
                        deps.insert(dep);
                    }
                }
            }
        }
        edges.insert(file.clone(), deps);
    }
    edges
}

/// A cycle through `start`, if there is one.
fn cycle_from(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn dfs(
        node: &str,
        start: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in edges.get(node).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if dfs(next, start, edges, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    dfs(start, start, edges, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_file_of_src_imports_itself_through_others() {
    let edges = imports(&sources());
    assert!(
        edges["actors/network.rs"].contains("actors/router.rs"),
        "the import scan finds nothing: {:?}",
        edges["actors/network.rs"]
    );
    let cycles: Vec<Vec<String>> = edges.keys().filter_map(|f| cycle_from(f, &edges)).collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn the_wire_protocol_has_no_runtime_and_the_core_no_io() {
    let files = sources();
    for word in ["actix", "tokio", "heed"] {
        assert!(
            !files["messages.rs"].contains(word),
            "messages.rs uses {word}"
        );
    }
    // The core's own test files (the simulation, proposer tests) may read a clock.
    let test_only = |f: &str| f.ends_with("_tests.rs") || f == "paxos/sim.rs";
    let core = files
        .iter()
        .filter(|(f, _)| f.starts_with("paxos/") && !test_only(f));
    for (file, code) in core {
        for word in [
            "actix",
            "tokio",
            "heed",
            "std::net",
            "std::fs",
            "crate::actors",
            "crate::storage",
            "Instant::now",
            "SystemTime",
            "rand::random",
            "rand::rng()",
            "thread_rng",
        ] {
            assert!(
                !code.contains(word),
                "{file} (the protocol core) uses {word}"
            );
        }
    }
}
