//! The collector's layers depend only downward (ARCHITECTURE.md): the command line, the HTTP API
//! and the console → the domain (usage, orders, enforcement, ingest, policy, admin, terms,
//! intake) → the store →
//! `tally-common`. Read from the source's paths (`crate::…`, `super::…`), this test fails when
//! - a domain module reaches into the HTTP layer or the command line;
//! - the store reaches into the domain's behaviour: it may use the domain's data types and pure
//!   rules (`orders`, `orders::rules`, `validation`), never what composes documents or runs
//!   (`orders::mail`, `usage`, `enforcement`, `admin`, `ingest`, `policy`);
//! - two top-level modules, or two modules under the same parent, import each other (directly
//!   or around a circle).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
const HTTP: &[&str] = &["api", "cli", "console"];
const DOMAIN: &[&str] =
    &["usage", "orders", "enforcement", "ingest", "policy", "admin", "validation", "terms", "intake"];
const STORE_MAY_USE: &[&str] =
    &["store", "orders", "orders::rules", "validation", "clock", "throttle", "digest", "metrics"];

/// Every source file as its module path (`store/sqlite/orders.rs` → `store::sqlite::orders`).
fn modules() -> BTreeMap<Module, String> {
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
    walk(Path::new(SOURCE), &[], &mut out);
    out
}

/// The paths a file names after `crate::` or `super::`, braces expanded one level.
fn paths(text: &str, anchor: &str) -> Vec<Vec<String>> {
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
fn dependencies(module: &Module, text: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let text = code.as_str();
    let longest = |path: Vec<String>| (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| known.contains(m));
    let parent = module[..module.len().saturating_sub(1)].to_vec();
    let from_crate = paths(text, "crate::").into_iter().filter_map(longest);
    let from_super = paths(text, "super::").into_iter().filter_map(|p| longest([parent.clone(), p].concat()));
    from_crate.chain(from_super).filter(|m| m != module).collect()
}

fn name(module: &Module) -> String {
    if module.is_empty() { "crate".into() } else { module.join("::") }
}

fn top(module: &Module) -> &str {
    module.first().map_or("crate", String::as_str)
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

#[test]
fn layers_depend_only_downward_and_no_modules_import_each_other() {
    let files = modules();
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    let mut wrong = Vec::new();
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &files {
        for dep in dependencies(module, text, &known) {
            let (from, to) = (top(module), top(&dep));
            if DOMAIN.contains(&from) && HTTP.contains(&to) {
                wrong.push(format!("the domain module {} imports {}", name(module), name(&dep)));
            }
            if from == "store" && !STORE_MAY_USE.iter().any(|allowed| name(&dep) == *allowed || to == "store") {
                wrong.push(format!("the store module {} imports {}", name(module), name(&dep)));
            }
            if from != to && !module.is_empty() && !dep.is_empty() {
                tops.entry(from.to_owned()).or_default().insert(to.to_owned());
            }
            let same_parent =
                module.len() == dep.len() && module.len() > 1 && module[..module.len() - 1] == dep[..dep.len() - 1];
            if same_parent {
                siblings.entry(name(module)).or_default().insert(name(&dep));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n  {}", wrong.join("\n  "));
    assert_eq!(circle(&tops), None, "top-level modules import each other around a circle");
    assert_eq!(circle(&siblings), None, "modules under one parent import each other around a circle");
    assert!(files.len() > 25 && tops.contains_key("api"), "the source was read: {:?}", files.keys());
}

#[test]
fn the_scanner_sees_the_paths_a_file_names() {
    let text = "use super::document::{\n    MonthStatus, UsageReport,\n};\nuse super::{daily, notify};\nlet x = crate::clock::now();";
    assert_eq!(
        paths(text, "super::"),
        [
            vec!["document".to_owned(), "MonthStatus".into()],
            vec!["document".into(), "UsageReport".into()],
            vec!["daily".into()],
            vec!["notify".into()]
        ]
    );
    assert_eq!(paths(text, "crate::"), [vec!["clock".to_owned(), "now".into()]]);
}
