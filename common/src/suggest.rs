//! The closest of a set of names to a mistyped one, for an unknown configuration key or command:
//! similar names (Jaro-Winkler similarity at least 0.8), the most similar first, but never one
//! that changes or deletes things before a harmless one.

/// How similar two names must be to be suggested.
const SIMILAR: f64 = 0.8;

/// The names of `known` similar to `given`, best first, those in `risky` after the others.
pub fn similar<'a>(given: &str, known: impl IntoIterator<Item = &'a str>, risky: &[&str]) -> Vec<&'a str> {
    let mut found: Vec<(bool, f64, &str)> = known
        .into_iter()
        .map(|name| (risky.contains(&name), strsim::jaro_winkler(given, name), name))
        .filter(|(_, score, _)| *score >= SIMILAR)
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
    found.into_iter().map(|(_, _, name)| name).collect()
}

/// `; did you mean "x"?`, or nothing when no name of `known` is similar.
pub fn did_you_mean<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    similar(given, known, &[]).first().map_or(String::new(), |name| format!("; did you mean {name:?}?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_harmless_name_comes_first() {
        let commands = ["report", "restore", "serve", "backup"];
        assert_eq!(similar("repot", commands, &["restore"]), ["report"]);
        assert_eq!(similar("re", ["report", "restore"], &["restore"]), ["report", "restore"]);
        assert_eq!(similar("restor", commands, &["restore"]), ["report", "restore"]);
        assert_eq!(similar("restor", commands, &[]), ["restore", "report"]);
        assert_eq!(similar("xyz", commands, &[]), Vec::<&str>::new());
        assert_eq!(did_you_mean("smtp_form", ["smtp", "smtp_from", "log"]), "; did you mean \"smtp_from\"?");
        assert_eq!(did_you_mean("zzz", ["smtp", "log"]), "");
    }
}
