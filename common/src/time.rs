//! UTC time windows: 5-second ticks (R2), 5-minute buckets (R2), UTC days of 288 slots (R5) and
//! the monthly P95 window with its two settings (R7).
//!
//! Every function takes the time it works on as an argument; nothing here reads a clock.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// Seconds between two sampling ticks (R2).
pub const TICK_SECS: i64 = 5;
/// Seconds in one bucket (R2).
pub const BUCKET_SECS: i64 = 300;
/// The most samples a bucket can hold (R2).
pub const SAMPLES_PER_BUCKET: u8 = 60;
/// Bucket slots in one UTC day (R5).
pub const DAY_SLOTS: usize = 288;

/// Errors of the time types: each names the value that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("bucket start {0} is not on a 5-minute boundary (a multiple of 300 s since the epoch)")]
    NotOnBucketBoundary(i64),
    #[error("time {0} (seconds since the epoch) is out of the supported range")]
    OutOfRange(i64),
    #[error("month {0:?} is not of the form YYYY-MM")]
    BadMonth(String),
    /// Of the form, but no month of the year.
    #[error("month {given:?} is not a month ({month}): months are 01 to 12")]
    NoSuchMonth { given: String, month: u32 },
    #[error("date {0:?} is not of the form YYYY-MM-DD")]
    BadDate(String),
}

/// A calendar date written `YYYY-MM-DD`, and nothing else.
pub fn parse_date(s: &str) -> Result<NaiveDate, TimeError> {
    let shaped = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    shaped
        .then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| TimeError::BadDate(s.to_owned()))
}

/// The first tick at or after `now`: a wall-clock multiple of 5 s (R2).
pub fn next_tick(now: DateTime<Utc>) -> DateTime<Utc> {
    let secs = now.timestamp();
    let aligned = secs - secs.rem_euclid(TICK_SECS);
    let at = DateTime::<Utc>::from_timestamp(aligned, 0).unwrap_or(now);
    if at < now { at + TimeDelta::seconds(TICK_SECS) } else { at }
}

/// The start of a 5-minute bucket `[k·300 s, (k+1)·300 s)` (R2). Always on a boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct BucketStart(DateTime<Utc>);

impl BucketStart {
    /// A bucket start from seconds since the epoch; refused unless on a 5-minute boundary.
    pub fn from_unix(secs: i64) -> Result<Self, TimeError> {
        if secs.rem_euclid(BUCKET_SECS) != 0 {
            return Err(TimeError::NotOnBucketBoundary(secs));
        }
        DateTime::<Utc>::from_timestamp(secs, 0).map(BucketStart).ok_or(TimeError::OutOfRange(secs))
    }

    /// The bucket that contains `t` (R2).
    pub fn containing(t: DateTime<Utc>) -> Self {
        let secs = t.timestamp();
        let start = t - TimeDelta::seconds(secs.rem_euclid(BUCKET_SECS)) - sub_second(t);
        BucketStart(start)
    }

    /// The first bucket of a UTC day.
    pub fn first_of_day(day: NaiveDate) -> Self {
        BucketStart(day_start(day))
    }

    pub fn unix(self) -> i64 {
        self.0.timestamp()
    }

    pub fn time(self) -> DateTime<Utc> {
        self.0
    }

    /// Where the bucket ends (exclusive): the next bucket's start.
    pub fn end(self) -> DateTime<Utc> {
        self.0 + TimeDelta::seconds(BUCKET_SECS)
    }

    pub fn next(self) -> Self {
        BucketStart(self.end())
    }

    pub fn contains(self, t: DateTime<Utc>) -> bool {
        self.0 <= t && t < self.end()
    }

    /// The UTC day the bucket belongs to.
    pub fn day(self) -> NaiveDate {
        self.0.date_naive()
    }

    /// The bucket's slot in its UTC day, `0..288` (R5).
    pub fn slot(self) -> usize {
        // A bucket start is on a boundary, so this is exact and below DAY_SLOTS.
        (self.unix().rem_euclid(86_400) / BUCKET_SECS) as usize
    }
}

impl TryFrom<i64> for BucketStart {
    type Error = TimeError;
    fn try_from(secs: i64) -> Result<Self, TimeError> {
        BucketStart::from_unix(secs)
    }
}

impl From<BucketStart> for i64 {
    fn from(b: BucketStart) -> i64 {
        b.unix()
    }
}

impl fmt::Display for BucketStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", rfc3339(self.0))
    }
}

/// RFC 3339 with a `Z` and whole seconds, the Contract's time format.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// 00:00 UTC of a day.
pub fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

fn sub_second(t: DateTime<Utc>) -> TimeDelta {
    TimeDelta::nanoseconds(i64::from(t.timestamp_subsec_nanos()))
}

/// A calendar month, `YYYY-MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Month {
    first: NaiveDate,
}

/// In OpenAPI documents: the string `YYYY-MM`.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Month {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9]{4}-(0[1-9]|1[0-2])$"))
            .examples(["2026-10"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Month {}

impl Month {
    pub fn new(year: i32, month: u32) -> Option<Self> {
        NaiveDate::from_ymd_opt(year, month, 1).map(|first| Month { first })
    }

    pub fn containing(day: NaiveDate) -> Self {
        Month { first: day.with_day(1).unwrap_or(day) }
    }

    pub fn first_day(self) -> NaiveDate {
        self.first
    }

    pub fn last_day(self) -> NaiveDate {
        self.next().first.pred_opt().unwrap_or(self.first)
    }

    pub fn next(self) -> Self {
        Month { first: self.first.checked_add_months(chrono::Months::new(1)).unwrap_or(self.first) }
    }

    pub fn previous(self) -> Self {
        Month { first: self.first.checked_sub_months(chrono::Months::new(1)).unwrap_or(self.first) }
    }

    /// The window the monthly P95 and the licensed capacity are taken over (R7).
    pub fn window(self, setting: MonthWindowSetting) -> MonthWindow {
        let end = match setting {
            MonthWindowSetting::Article => self.last_day(),
            MonthWindowSetting::Calendar => self.next().first,
        };
        MonthWindow { start: self.first, end }
    }
}

impl FromStr for Month {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, TimeError> {
        let bad = || TimeError::BadMonth(s.to_owned());
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (y, m) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if !(1..=12).contains(&m) {
            return Err(TimeError::NoSuchMonth { given: s.to_owned(), month: m });
        }
        Month::new(y, m).ok_or_else(bad)
    }
}

impl TryFrom<String> for Month {
    type Error = TimeError;
    fn try_from(s: String) -> Result<Self, TimeError> {
        s.parse()
    }
}

impl From<Month> for String {
    fn from(m: Month) -> String {
        m.to_string()
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.first.year(), self.first.month())
    }
}

/// The collector's `month_window` setting (R7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MonthWindowSetting {
    /// The article, literally: from 00:00 UTC on the 1st to 00:00 UTC on the last day, so the
    /// last calendar day is outside the window.
    #[default]
    Article,
    /// The whole calendar month, last day included.
    Calendar,
}

/// A window of whole UTC days, `[start, end)`: the days `start ..= end - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MonthWindow {
    /// First day inside the window.
    pub start: NaiveDate,
    /// First day after the window (exclusive).
    pub end: NaiveDate,
}

impl MonthWindow {
    pub fn start_time(self) -> DateTime<Utc> {
        day_start(self.start)
    }

    pub fn end_time(self) -> DateTime<Utc> {
        day_start(self.end)
    }

    pub fn contains(self, day: NaiveDate) -> bool {
        self.start <= day && day < self.end
    }

    /// The days of the window, in order.
    pub fn days(self) -> impl Iterator<Item = NaiveDate> {
        let end = self.end;
        self.start.iter_days().take_while(move |d| *d < end)
    }

    pub fn day_count(self) -> usize {
        (self.end - self.start).num_days().max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn dates_are_exactly_yyyy_mm_dd() {
        assert_eq!(parse_date("2026-11-30"), Ok(NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()));
        for bad in ["30-11-2026", "2026-11-31", "2026-1-05", "2026-11-30T00:00:00Z", "", "２０２６-11-30"] {
            assert_eq!(parse_date(bad), Err(TimeError::BadDate(bad.to_owned())), "{bad}");
        }
        assert_eq!(TimeError::BadDate("x".into()).to_string(), "date \"x\" is not of the form YYYY-MM-DD");
        assert_eq!(
            "2026-13".parse::<Month>().unwrap_err().to_string(),
            "month \"2026-13\" is not a month (13): months are 01 to 12"
        );
        assert_eq!(
            "2026-00".parse::<Month>().unwrap_err().to_string(),
            "month \"2026-00\" is not a month (0): months are 01 to 12"
        );
        assert_eq!("2026-1".parse::<Month>().unwrap_err().to_string(), "month \"2026-1\" is not of the form YYYY-MM");
    }

    #[test]
    fn ticks_align_to_multiples_of_five_seconds() {
        assert_eq!(next_tick(t("2026-10-01T00:00:00Z")), t("2026-10-01T00:00:00Z"));
        assert_eq!(next_tick(t("2026-10-01T00:00:00.001Z")), t("2026-10-01T00:00:05Z"));
        assert_eq!(next_tick(t("2026-10-01T00:00:04.999Z")), t("2026-10-01T00:00:05Z"));
    }

    #[test]
    fn buckets_are_utc_five_minute_intervals() {
        let b = BucketStart::containing(t("2026-10-01T23:59:59.9Z"));
        assert_eq!(b.time(), t("2026-10-01T23:55:00Z"));
        assert_eq!(b.slot(), 287);
        assert_eq!(b.day(), NaiveDate::from_ymd_opt(2026, 10, 1).unwrap());
        assert_eq!(b.next().slot(), 0);
        assert_eq!(BucketStart::from_unix(301), Err(TimeError::NotOnBucketBoundary(301)));
        assert_eq!(
            BucketStart::from_unix(i64::MAX - i64::MAX % 300).unwrap_err(),
            TimeError::OutOfRange(i64::MAX - i64::MAX % 300)
        );
    }

    #[test]
    fn article_window_leaves_out_the_last_day_calendar_keeps_it() {
        let m: Month = "2026-02".parse().unwrap();
        let article = m.window(MonthWindowSetting::Article);
        assert_eq!(article.start_time(), t("2026-02-01T00:00:00Z"));
        assert_eq!(article.end_time(), t("2026-02-28T00:00:00Z"));
        assert_eq!(article.day_count(), 27);
        let calendar = m.window(MonthWindowSetting::Calendar);
        assert_eq!(calendar.end_time(), t("2026-03-01T00:00:00Z"));
        assert_eq!(calendar.days().count(), 28);
        assert_eq!(calendar.days().last(), Some(NaiveDate::from_ymd_opt(2026, 2, 28).unwrap()));
        let dec: Month = "2026-12".parse().unwrap();
        assert_eq!(dec.window(MonthWindowSetting::Calendar).end_time(), t("2027-01-01T00:00:00Z"));
    }

    #[test]
    fn months_parse_strictly() {
        assert_eq!("2026-10".parse::<Month>().unwrap().to_string(), "2026-10");
        for bad in ["2026-13", "2026-1", "26-10", "2026/10", "2026-00", "+026-10", ""] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
    }
}
