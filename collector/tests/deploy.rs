//! `deploy/`: the compose file and the Kubernetes manifests pass `yamllint`, the manifests
//! pass `kubernetes-validate --strict` (the Kubernetes API's schemas), the compose file passes
//! `docker-compose config` (the Compose schema: no daemon needed), and every `TALLY_` variable
//! they set is a configuration key (`TALLY_<KEY>`), so none is silently ignored.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use tally_testkit::skip;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML file under `dir`.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn tool(name: &str, args: &[&str], files: &[PathBuf]) -> Option<(bool, String)> {
    let out = Command::new(name).args(args).args(files).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), text))
}

#[test]
fn the_manifests_are_valid_and_set_only_real_keys() {
    let files = yaml_files(&deploy());
    let manifests: Vec<PathBuf> =
        files.iter().filter(|f| f.starts_with(deploy().join("kubernetes"))).cloned().collect();
    assert!(files.len() >= 3 && manifests.len() >= 2, "{files:?}");

    let rules = "{extends: default, rules: {line-length: {max: 110}, braces: {max-spaces-inside: 1}}}";
    let Some((ok, report)) = tool("yamllint", &["--strict", "-d", rules], &files) else {
        return skip!("yamllint is not on the PATH; `pip install yamllint` to run it");
    };
    assert!(ok, "yamllint:\n{report}");
    let Some((ok, report)) = tool("kubernetes-validate", &["--strict"], &manifests) else {
        return skip!("kubernetes-validate is not on the PATH; `pip install kubernetes-validate` to run it");
    };
    assert!(ok && report.matches("passed for resource").count() >= 7, "kubernetes-validate:\n{report}");
    let compose = deploy().join("compose.yaml");
    let checked = Command::new("docker-compose")
        .arg("--file")
        .arg(&compose)
        .args(["config", "--quiet"])
        .envs([("POSTGRES_PASSWORD", "secret"), ("TALLY_OPERATOR_TOKEN", "0123456789abcdef0123456789abcdef")])
        .output();
    let Ok(checked) = checked else {
        return skip!("docker-compose is not installed (apt-get install docker-compose)");
    };
    assert!(checked.status.success(), "docker-compose config:\n{}", String::from_utf8_lossy(&checked.stderr));

    let keys: Vec<String> = tally_collector::config::DEFAULT_CONFIG
        .lines()
        .filter_map(|l| l.trim_start_matches("# ").split_once(" = ").map(|(k, _)| k.trim().to_ascii_uppercase()))
        .filter(|k| k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(keys.len() >= 20, "{keys:?}");
    let mut variables = 0;
    for file in files.iter().chain([&deploy().join("Containerfile")]) {
        let text = std::fs::read_to_string(file).unwrap();
        for (at, _) in text.match_indices("TALLY_") {
            let name: String = text[at + 6..].chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
            if name.is_empty() {
                continue; // `TALLY_<KEY>` in a comment
            }
            assert!(keys.contains(&name), "{}: TALLY_{name} is no configuration key", file.display());
            variables += 1;
        }
    }
    assert!(variables >= 10, "{variables}");
}
