//! How the agent's and the collector's TOML configuration files are read: every problem found
//! is collected and reported at once (STYLE habit 5), each naming its key; a missing key takes
//! its default.

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
}

impl Fields {
    /// Parses TOML text; a syntax error (which names its line) is the only error then.
    pub fn parse(text: &str) -> Result<Fields, ConfigErrors> {
        let table = text.parse().map_err(|e: toml::de::Error| ConfigErrors {
            source: "configuration".into(),
            errors: vec![e.to_string().trim_end().to_owned()],
        })?;
        Ok(Fields { table, errors: Vec::new() })
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
            self.errors.push(format!("{key}: unknown key (known keys: {})", known.join(", ")));
        }
        if self.errors.is_empty() {
            Ok(value())
        } else {
            Err(ConfigErrors { source: "configuration".into(), errors: self.errors })
        }
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
    }

    #[test]
    fn a_file_that_cannot_be_read_is_named() {
        let errors = load(Path::new("/nonexistent/tally.toml"), |_| Ok(())).unwrap_err();
        assert_eq!(errors.source, "/nonexistent/tally.toml");
        assert!(errors.errors[0].starts_with("cannot read the file: "), "{errors}");
    }
}
