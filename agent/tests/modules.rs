//! The agent's modules import one another without a circle (ARCHITECTURE.md): `status` is a sink
//! that the meter, the uplink, the LAN watch and the store fill; the store keeps the LAN's days
//! (`lan::day`) and never the other way round. Read from the source's paths (`crate::…`,
//! `super::…`), this test fails when two top-level modules, or two modules under the same
//! parent, import each other, directly or around a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tally_testkit::modules::{Module, circle, dependencies, modules, name, top};

#[test]
fn no_modules_import_each_other() {
    let files = modules(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")));
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &files {
        for dep in dependencies(module, text, &known) {
            let (from, to) = (top(module), top(&dep));
            if from != to && !module.is_empty() && !dep.is_empty() {
                tops.entry(from.to_owned()).or_default().insert(to.to_owned());
            }
            if module.len() == dep.len() && module.len() > 1 && module[..module.len() - 1] == dep[..dep.len() - 1] {
                siblings.entry(name(module)).or_default().insert(name(&dep));
            }
        }
    }
    assert_eq!(circle(&tops), None, "top-level modules import each other around a circle");
    assert_eq!(circle(&siblings), None, "modules under one parent import each other around a circle");
    assert!(tops.get("store").is_some_and(|deps| deps.contains("lan")), "the source was read: {tops:?}");
}
