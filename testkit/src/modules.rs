//! A crate's modules as its source names them, for the tests that keep its layers (the
//! collector's `tests/layers.rs`, the agent's `tests/modules.rs`): each file's module path, the
//! modules its code names after `crate::` and `super::`, and circles among them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module as its path's segments (`store::sqlite` is `["store", "sqlite"]`; the crate's root is
/// empty).
pub type Module = Vec<String>;

/// Every source file under `source` (a crate's `src/`) with its text, by its module path (`store/sqlite/orders.rs` → `store::sqlite::orders`).
pub fn modules(source: &Path) -> BTreeMap<Module, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Module, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                walk(&path, &[prefix, &[name]].concat(), out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = match name.as_str() {
                    "main" => continue,
                    "mod" | "lib" => prefix.to_vec(),
                    _ => [prefix, &[name]].concat(),
                };
                out.insert(module, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(source, &[], &mut out);
    out
}

/// The paths a file names after `crate::` or `super::`, braces expanded one level.
pub fn paths(text: &str, anchor: &str) -> Vec<Vec<String>> {
    let path_end = |s: &str| s.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(s.len());
    let segments = |s: &str| -> Vec<String> { s.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect() };
    let mut found = Vec::new();
    for (at, _) in text.match_indices(anchor) {
        let rest = &text[at + anchor.len()..];
        let end = path_end(rest);
        let head = segments(&rest[..end]);
        if rest[end..].starts_with('{') {
            let close = rest[end..].find('}').map_or(rest.len(), |c| end + c);
            for item in rest[end + 1..close].split(',').map(str::trim).filter(|i| !i.is_empty()) {
                found.push([head.clone(), segments(&item[..path_end(item)])].concat());
            }
        } else if !head.is_empty() {
            found.push(head);
        }
    }
    found
}

/// The modules `module`'s file depends on: the longest known module each path names, in its
/// code (comments, which may name any module, are left out).
pub fn dependencies(module: &Module, text: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let text = code.as_str();
    let longest = |path: Vec<String>| (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| known.contains(m));
    let parent = module[..module.len().saturating_sub(1)].to_vec();
    let from_crate = paths(text, "crate::").into_iter().filter_map(longest);
    let from_super = paths(text, "super::").into_iter().filter_map(|p| longest([parent.clone(), p].concat()));
    from_crate.chain(from_super).filter(|m| m != module).collect()
}

pub fn name(module: &Module) -> String {
    if module.is_empty() { "crate".into() } else { module.join("::") }
}

pub fn top(module: &Module) -> &str {
    module.first().map_or("crate", String::as_str)
}

/// A circle in `graph`, if there is one.
pub fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some([&path[at..], &[node.to_owned()]].concat());
        }
        if !done.insert(node.to_owned()) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}
