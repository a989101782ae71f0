//! Region groups and the country table (R11).
//!
//! The country → group table and the restricted-country list are data files shipped in
//! `common/data/`, compiled in as the defaults and replaceable by the operator's own files of the
//! same form ([`RegionTable::parse`]). This module parses text; reading the files is the caller's.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::kinds::{ZtnaRegion, identifiers};

identifiers! {
    /// A region group: licenses are bought, and usage is measured, per group (R11).
    RegionGroup "region group" {
        Group1 = "group1",
        Group2 = "group2",
        China = "china",
        Vietnam = "vietnam",
        Morocco = "morocco",
    }
}

impl RegionGroup {
    /// China, Vietnam and Morocco stand alone; every site there must be capped (R17).
    pub fn is_stand_alone(self) -> bool {
        !matches!(self, RegionGroup::Group1 | RegionGroup::Group2)
    }

    /// The ZTNA region of a user whose primary work location is in this group (R12).
    pub fn ztna_region(self) -> ZtnaRegion {
        match self {
            RegionGroup::Group1 | RegionGroup::Group2 => ZtnaRegion::General,
            RegionGroup::China => ZtnaRegion::China,
            RegionGroup::Vietnam => ZtnaRegion::Vietnam,
            RegionGroup::Morocco => ZtnaRegion::Morocco,
        }
    }
}

/// An ISO 3166-1 alpha-2 country code: two ASCII capital letters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    pub fn as_str(&self) -> &str {
        // Only ASCII capitals are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

/// A country code that is not two capital letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an ISO 3166-1 alpha-2 country code (two capital letters, such as US or CN)")]
pub struct BadCountryCode(pub String);

impl FromStr for CountryCode {
    type Err = BadCountryCode;
    fn from_str(s: &str) -> Result<Self, BadCountryCode> {
        match s.as_bytes() {
            &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok(CountryCode([a, b])),
            _ => Err(BadCountryCode(s.to_owned())),
        }
    }
}

impl TryFrom<String> for CountryCode {
    type Error = BadCountryCode;
    fn try_from(s: String) -> Result<Self, BadCountryCode> {
        s.parse()
    }
}

impl From<CountryCode> for String {
    fn from(c: CountryCode) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.as_str())
    }
}

/// Why a country cannot hold a site or a license.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountryError {
    #[error("{name} ({code}) is on the restricted-country list: no site or license may be placed there")]
    Restricted { code: CountryCode, name: String },
    #[error("country {0} is not in the region table")]
    Unknown(CountryCode),
}

/// A line of a region data file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {message}")]
pub struct DataError {
    pub file: &'static str,
    pub line: usize,
    pub message: String,
}

/// The shipped country table, `country,region_group,name` per line.
pub const BUILTIN_COUNTRIES: &str = include_str!("../data/countries.csv");
/// The shipped restricted-country list, `CC name` per line.
pub const BUILTIN_RESTRICTED: &str = include_str!("../data/restricted.txt");

#[derive(Debug, Clone)]
struct Country {
    group: RegionGroup,
    name: String,
}

/// Which region group each country belongs to, and which countries are restricted (R11).
#[derive(Debug, Clone)]
pub struct RegionTable {
    countries: BTreeMap<CountryCode, Country>,
    restricted: BTreeMap<CountryCode, String>,
}

impl RegionTable {
    /// The tables shipped in `common/data/` (their validity is a test of this crate).
    pub fn builtin() -> Self {
        match Self::parse(BUILTIN_COUNTRIES, BUILTIN_RESTRICTED) {
            Ok(table) => table,
            Err(errors) => unreachable!("the shipped region data is invalid: {errors:?}"),
        }
    }

    /// Parses a country table and a restricted list of the shipped forms. Every bad line is
    /// reported, with its file and line number; a country may appear in only one of the two.
    pub fn parse(countries_csv: &str, restricted_txt: &str) -> Result<Self, Vec<DataError>> {
        let mut errors = Vec::new();
        let mut countries = BTreeMap::new();
        let mut restricted = BTreeMap::new();
        let error = |file, line, message: String| DataError { file, line, message };

        for (line, text) in data_lines(countries_csv) {
            if text == "country,region_group,name" {
                continue;
            }
            let mut fields = text.splitn(3, ',').map(str::trim);
            let (code, group, name) = (fields.next(), fields.next(), fields.next());
            let (Some(code), Some(group), Some(name)) = (code, group, name) else {
                errors.push(error("countries", line, format!("expected `country,region_group,name`, found {text:?}")));
                continue;
            };
            let code = match code.parse::<CountryCode>() {
                Ok(code) => code,
                Err(e) => {
                    errors.push(error("countries", line, e.to_string()));
                    continue;
                }
            };
            let group = match group.parse::<RegionGroup>() {
                Ok(group) => group,
                Err(e) => {
                    errors.push(error("countries", line, e.to_string()));
                    continue;
                }
            };
            let country = Country { group, name: name.to_owned() };
            if countries.insert(code, country).is_some() {
                errors.push(error("countries", line, format!("country {code} is listed twice")));
            }
        }

        for (line, text) in data_lines(restricted_txt) {
            let (code, name) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
            match code.parse::<CountryCode>() {
                Ok(code) if countries.contains_key(&code) => errors.push(error(
                    "restricted",
                    line,
                    format!("country {code} is restricted but also has a region group in the country table"),
                )),
                Ok(code) => {
                    let name = if name.trim().is_empty() { code.to_string() } else { name.trim().to_owned() };
                    if restricted.insert(code, name).is_some() {
                        errors.push(error("restricted", line, format!("country {code} is listed twice")));
                    }
                }
                Err(e) => errors.push(error("restricted", line, e.to_string())),
            }
        }

        if errors.is_empty() { Ok(RegionTable { countries, restricted }) } else { Err(errors) }
    }

    /// The region group a site or license in `country` belongs to; refused for restricted and
    /// unknown countries (R11).
    pub fn group_of(&self, country: CountryCode) -> Result<RegionGroup, CountryError> {
        if let Some(name) = self.restricted.get(&country) {
            return Err(CountryError::Restricted { code: country, name: name.clone() });
        }
        self.countries.get(&country).map(|c| c.group).ok_or(CountryError::Unknown(country))
    }

    /// The countries a site or license may be in (restricted ones are not), in code order.
    pub fn countries(&self) -> impl Iterator<Item = CountryCode> + '_ {
        self.countries.keys().copied().filter(|c| !self.restricted.contains_key(c))
    }

    /// The country's name, for messages.
    pub fn name_of(&self, country: CountryCode) -> Option<&str> {
        self.countries
            .get(&country)
            .map(|c| c.name.as_str())
            .or_else(|| self.restricted.get(&country).map(String::as_str))
    }

    pub fn is_restricted(&self, country: CountryCode) -> bool {
        self.restricted.contains_key(&country)
    }
}

/// Non-empty, non-comment lines with their 1-based line numbers.
fn data_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(s: &str) -> CountryCode {
        s.parse().unwrap()
    }

    #[test]
    fn shipped_table_places_the_stand_alone_countries_and_refuses_restricted_ones() {
        let table = RegionTable::builtin();
        assert_eq!(table.group_of(cc("US")), Ok(RegionGroup::Group1));
        assert_eq!(table.group_of(cc("DE")), Ok(RegionGroup::Group1));
        assert_eq!(table.group_of(cc("JP")), Ok(RegionGroup::Group2));
        assert_eq!(table.group_of(cc("AU")), Ok(RegionGroup::Group2));
        assert_eq!(table.group_of(cc("BR")), Ok(RegionGroup::Group2));
        assert_eq!(table.group_of(cc("CN")), Ok(RegionGroup::China));
        assert_eq!(table.group_of(cc("VN")), Ok(RegionGroup::Vietnam));
        assert_eq!(table.group_of(cc("MA")), Ok(RegionGroup::Morocco));
        let err = table.group_of(cc("KP")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "North Korea (KP) is on the restricted-country list: no site or license may be placed there"
        );
        assert_eq!(table.group_of(cc("ZZ")), Err(CountryError::Unknown(cc("ZZ"))));
    }

    #[test]
    fn shipped_tables_cover_every_iso_code_exactly_once() {
        let table = RegionTable::builtin();
        assert_eq!(table.countries.len() + table.restricted.len(), 249);
    }

    #[test]
    fn operator_tables_report_every_bad_line_at_once() {
        let countries = "# mine\ncountry,region_group,name\nUS,group1,United States\nus,group1,x\nFR,group9,France\nUS,group2,Again\nDE\n";
        let restricted = "XX Nowhere\nUS United States\nbad\n";
        let errors = RegionTable::parse(countries, restricted).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 6, "{text:#?}");
        assert!(text[0].starts_with("countries line 4: \"us\" is not an ISO 3166-1"));
        assert!(text[1].starts_with("countries line 5: \"group9\" is not a valid region group"));
        assert_eq!(text[2], "countries line 6: country US is listed twice");
        assert!(text[3].starts_with("countries line 7: expected `country,region_group,name`"));
        assert!(text[4].starts_with("restricted line 2: country US is restricted but also"));
        assert!(text[5].starts_with("restricted line 3: \"bad\" is not an ISO"));
    }

    #[test]
    fn an_operator_may_move_a_country_and_restrict_another() {
        let table = RegionTable::parse("US,group2,United States\n", "FR France\n").unwrap();
        assert_eq!(table.group_of(cc("US")), Ok(RegionGroup::Group2));
        assert!(table.is_restricted(cc("FR")));
        assert_eq!(table.name_of(cc("FR")), Some("France"));
    }
}

/// The region group a site belongs to on `day` (R31): the one in force at its 00:00 UTC, set by
/// the latest change effective on or before it. `history` holds each change's first day and
/// group, in day order; `None` before the first.
pub fn group_on(history: &[(chrono::NaiveDate, RegionGroup)], day: chrono::NaiveDate) -> Option<RegionGroup> {
    history.iter().take_while(|(from, _)| *from <= day).last().map(|(_, group)| *group)
}

#[cfg(test)]
mod history_tests {
    use super::*;

    #[test]
    fn a_day_belongs_to_the_group_in_force_at_its_start() {
        let day = |d| chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let history = [(chrono::NaiveDate::MIN, RegionGroup::Group1), (day(11), RegionGroup::China)];
        assert_eq!(group_on(&history, day(10)), Some(RegionGroup::Group1));
        assert_eq!(group_on(&history, day(11)), Some(RegionGroup::China), "from its 00:00 UTC");
        assert_eq!(group_on(&history, day(30)), Some(RegionGroup::China));
        assert_eq!(group_on(&history[1..], day(10)), None, "before the first change");
    }
}
