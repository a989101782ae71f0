//! The collector's layers depend only downward (ARCHITECTURE.md): the command line, the HTTP API
//! and the console → the domain (accounts, agents, enforcement, usage, orders, validation) →
//! the store → `tally-common`. Read from the source's paths (`crate::…`, `super::…`), this test fails when
//! - a domain module reaches into the HTTP layer or the command line;
//! - the store reaches into the domain's behaviour: it may use the domain's data types and pure
//!   rules (`orders`, `orders::rules`, `validation`), never what composes documents or runs
//!   (`orders::mail`, `usage`, `enforcement`, `accounts`, `agents`);
//! - two top-level modules, or two modules under the same parent, import each other (directly
//!   or around a circle).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tally_testkit::modules::{Module, circle, dependencies, modules, name, paths, top};

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
const HTTP: &[&str] = &["api", "cli", "console"];
const DOMAIN: &[&str] = &["accounts", "agents", "enforcement", "usage", "orders", "validation"];
const STORE_MAY_USE: &[&str] =
    &["store", "orders", "orders::rules", "validation", "clock", "throttle", "digest", "metrics"];

#[test]
fn layers_depend_only_downward_and_no_modules_import_each_other() {
    let files = modules(Path::new(SOURCE));
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
    let named: BTreeSet<&str> = files.keys().filter(|m| !m.is_empty()).map(top).collect();
    let stale: Vec<&&str> = DOMAIN.iter().chain(HTTP).filter(|layer| !named.contains(**layer)).collect();
    assert!(stale.is_empty(), "the layers name modules the source does not have: {stale:?}");
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
