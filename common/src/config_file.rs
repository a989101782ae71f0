//! How the agent's and the collector's TOML configuration files are read: every problem found
//! is collected and reported at once (STYLE habit 5), each naming its key; a missing key takes
//! its default. A key may also come from the environment ([`Fields::environment`]): a container
//! is configured without a file.

use std::fmt;
use std::path::{Path, PathBuf};

/// Every problem found in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file (or "configuration" for text without a file).
    pub source: String,
    pub errors: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} error(s)", self.source, self.errors.len())?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The configuration a commented example file gives (its crate's tests prove that it parses).
pub fn defaults<T>(example: &str, parse: fn(&str) -> Result<T, ConfigErrors>) -> T {
    match parse(example) {
        Ok(config) => config,
        Err(errors) => unreachable!("the default configuration is invalid: {errors}"),
    }
}

/// Reads `path` and parses it with `parse`; errors name the file.
pub fn load<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T, ConfigErrors>) -> Result<T, ConfigErrors> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors { source: source.clone(), errors: vec![format!("cannot read the file: {e}")] })?;
    parse(&text).map_err(|e| ConfigErrors { source, errors: e.errors })
}

/// A parsed file's keys, looked up by type: a wrong value is recorded as an error and its
/// default used instead, so that parsing goes on and finds every other problem too.
#[derive(Debug)]
pub struct Fields {
    table: toml::Table,
    errors: Vec<String>,
    /// The keys set by the environment, each with its variable: their errors name the variable.
    from_environment: Vec<(String, String)>,
}

/// How a key's value is written in its environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Taken as it is (a path, a name, a token: never read as a number).
    Text,
    /// A decimal integer.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// Items separated by commas, or a TOML list (`["a", "b"]`).
    List,
}

/// The variable that sets `key`: `prefix` and the key in capitals (`TALLY_` + `http_listen` =
/// `TALLY_HTTP_LISTEN`).
pub fn variable(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", key.to_ascii_uppercase())
}

impl Fields {
    /// Parses TOML text; a syntax error (which names its line) is the only error then.
    pub fn parse(text: &str) -> Result<Fields, ConfigErrors> {
        let table = text.parse().map_err(|e: toml::de::Error| ConfigErrors {
            source: "configuration".into(),
            errors: vec![e.to_string().trim_end().to_owned()],
        })?;
        Ok(Fields { table, errors: Vec::new(), from_environment: Vec::new() })
    }

    /// Sets each of `keys` whose variable ([`variable`]) `lookup` finds, over the file's value.
    /// A value that is not of its key's kind is an error naming the variable.
    pub fn environment(
        &mut self,
        prefix: &str,
        keys: &[(&str, ValueKind)],
        lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) {
        for &(key, kind) in keys {
            let name = variable(prefix, key);
            let Some(raw) = lookup(&name) else { continue };
            let Some(text) = raw.to_str() else {
                self.errors.push(format!("{name}: not UTF-8"));
                continue;
            };
            let value = match kind {
                ValueKind::Text => Ok(toml::Value::String(text.to_owned())),
                ValueKind::Integer => text.trim().parse().map(toml::Value::Integer).map_err(|_| "an integer"),
                ValueKind::Boolean => text.trim().parse().map(toml::Value::Boolean).map_err(|_| "true or false"),
                ValueKind::List => Ok(list(text)),
            };
            match value {
                Ok(value) => {
                    self.table.insert(key.to_owned(), value);
                    self.from_environment.push((key.to_owned(), name));
                }
                Err(expected) => self.errors.push(format!("{name}: expected {expected}, found {text:?}")),
            }
        }
    }

    /// The raw value of `key`, for a look-up of its own.
    pub fn get(&self, key: &str) -> Option<&toml::Value> {
        self.table.get(key)
    }

    /// Records a problem, `key: what is wrong`.
    pub fn error(&mut self, message: String) {
        self.errors.push(message);
    }

    pub fn string(&mut self, key: &str, default: &str) -> String {
        match self.table.get(key) {
            None => default.to_owned(),
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => {
                self.errors.push(format!("{key}: expected a string, found {}", other.type_str()));
                default.to_owned()
            }
        }
    }

    /// A string that must not be empty.
    pub fn path(&mut self, key: &str, default: &str) -> PathBuf {
        let path = self.string(key, default);
        if path.is_empty() {
            self.errors.push(format!("{key}: must not be empty"));
        }
        PathBuf::from(path)
    }

    pub fn boolean(&mut self, key: &str, default: bool) -> bool {
        match self.table.get(key) {
            None => default,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                self.errors.push(format!("{key}: expected true or false, found {}", other.type_str()));
                default
            }
        }
    }

    /// An integer in `min..=max` (with `min` ≥ 0).
    pub fn integer(&mut self, key: &str, default: u64, min: i64, max: i64) -> u64 {
        match self.table.get(key) {
            None => default,
            Some(toml::Value::Integer(n)) if (min..=max).contains(n) => n.unsigned_abs(),
            Some(toml::Value::Integer(n)) => {
                self.errors.push(format!("{key}: {n} is out of range, expected {min} to {max}"));
                default
            }
            Some(other) => {
                self.errors.push(format!("{key}: expected an integer, found {}", other.type_str()));
                default
            }
        }
    }

    /// The value built from the fields when nothing was wrong and no key is outside `known`;
    /// otherwise every problem.
    pub fn finish<T>(mut self, known: &[&str], value: impl FnOnce() -> T) -> Result<T, ConfigErrors> {
        for key in self.table.keys().filter(|k| !known.contains(&k.as_str())) {
            let hint = crate::suggest::did_you_mean(key, known.iter().copied());
            self.errors.push(format!("{key}: unknown key{hint} (known keys: {})", known.join(", ")));
        }
        for error in &mut self.errors {
            let set_by = self.from_environment.iter().find(|(key, _)| {
                error.strip_prefix(key.as_str()).is_some_and(|rest| rest.starts_with(':') || rest.starts_with('['))
            });
            if let Some((_, name)) = set_by {
                *error = format!("{name} ({error})");
            }
        }
        if self.errors.is_empty() {
            Ok(value())
        } else {
            Err(ConfigErrors { source: "configuration".into(), errors: self.errors })
        }
    }
}

/// A list variable's value: a TOML list, or items separated by commas.
fn list(text: &str) -> toml::Value {
    let parsed = text.trim().starts_with('[').then(|| format!("v = {text}").parse::<toml::Table>().ok()).flatten();
    match parsed.and_then(|mut table| table.remove("v")) {
        Some(value) => value,
        None => toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|i| !i.is_empty())
                .map(|i| toml::Value::String(i.to_owned()))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_values_take_their_default_and_are_all_reported() {
        let mut fields = Fields::parse("name = 3\ncount = 0\ndir = \"\"\nextra = true").unwrap();
        assert_eq!(fields.string("name", "x"), "x");
        assert_eq!(fields.integer("count", 5, 1, 10), 5);
        assert_eq!(fields.integer("missing", 7, 1, 10), 7);
        assert_eq!(fields.path("dir", "/d"), PathBuf::new());
        let errors = fields.finish(&["name", "count", "dir"], || ()).unwrap_err().errors;
        assert_eq!(
            errors,
            [
                "name: expected a string, found integer",
                "count: 0 is out of range, expected 1 to 10",
                "dir: must not be empty",
                "extra: unknown key (known keys: name, count, dir)",
            ]
        );
        let fields = Fields::parse("nmae = \"x\"\n").unwrap();
        let errors = fields.finish(&["name", "count"], || ()).unwrap_err().errors;
        assert_eq!(errors, ["nmae: unknown key; did you mean \"name\"? (known keys: name, count)"]);
    }

    #[test]
    fn the_environment_sets_keys_by_kind_and_its_errors_name_the_variable() {
        let vars = [
            ("T_NAME", "0123"),
            ("T_COUNT", "12"),
            ("T_FLAG", "yes"),
            ("T_HOSTS", "a.example, 10.0.0.1"),
            ("T_PORTS", "[1, 2]"),
            ("T_DIR", ""),
        ];
        let lookup = |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).into());
        let mut fields = Fields::parse("name = \"file\"\ncount = 3\nhosts = [\"x\"]").unwrap();
        let keys = [
            ("name", ValueKind::Text),
            ("count", ValueKind::Integer),
            ("flag", ValueKind::Boolean),
            ("hosts", ValueKind::List),
            ("ports", ValueKind::List),
            ("dir", ValueKind::Text),
            ("absent", ValueKind::Text),
        ];
        fields.environment("T_", &keys, lookup);
        assert_eq!(fields.string("name", "x"), "0123", "a text is never a number");
        assert_eq!(fields.integer("count", 5, 1, 10), 5, "12 is out of range");
        let strings = |v: &[&str]| toml::Value::Array(v.iter().map(|s| toml::Value::String((*s).into())).collect());
        assert_eq!(fields.get("hosts"), Some(&strings(&["a.example", "10.0.0.1"])));
        let ports = toml::Value::Array(vec![toml::Value::Integer(1), toml::Value::Integer(2)]);
        assert_eq!(fields.get("ports"), Some(&ports));
        assert_eq!(fields.path("dir", "/d"), PathBuf::new());
        assert_eq!(fields.string("absent", "kept"), "kept");
        let errors = fields.finish(&keys.map(|(k, _)| k), || ()).unwrap_err().errors;
        assert_eq!(
            errors,
            [
                "T_FLAG: expected true or false, found \"yes\"",
                "T_COUNT (count: 12 is out of range, expected 1 to 10)",
                "T_DIR (dir: must not be empty)",
            ]
        );
    }

    #[test]
    fn a_file_that_cannot_be_read_is_named() {
        let errors = load(Path::new("/nonexistent/tally.toml"), |_| Ok(())).unwrap_err();
        assert_eq!(errors.source, "/nonexistent/tally.toml");
        assert!(errors.errors[0].starts_with("cannot read the file: "), "{errors}");
    }
}
