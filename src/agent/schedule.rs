//! An agent's working hours (spec §13) and the clock that tells the time.
//!
//! `working_hours` is `{"timezone": "Europe/Moscow", "days": {"mon": [["09:00", "18:00"]], …}}`:
//! an IANA zone and, per day key (`mon` … `sun`), at most ten ordered, non-overlapping
//! `[start, end)` intervals of local wall-clock time; a day left out is closed, and an interval
//! may end at `"24:00"`. An agent without working hours (`null` or absent) is always open:
//! callers keep an `Option<WorkingHours>`, read by [`WorkingHours::from_optional_json`].
//!
//! Being open is a question about the wall clock where the agent works, so a repeated hour in
//! autumn is open twice and a skipped hour in spring is never open. [`WorkingHours::next_opening`]
//! is the earliest instant at or after the given one at which [`WorkingHours::is_open`] holds.
//!
//! The zone database is compiled in (chrono-tz): the deployed container may have no zoneinfo.

use std::sync::{Mutex, PoisonError};

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, Offset, TimeDelta, TimeZone, Timelike,
    Utc, Weekday,
};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::domain::FieldError;

/// The path of the field in an agent's body; errors name fields below it.
const FIELD: &str = "working_hours";
/// Day keys in the order of `Weekday::num_days_from_monday`.
const DAY_KEYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MAX_INTERVALS_PER_DAY: usize = 10;
const MINUTES_PER_DAY: u16 = 24 * 60;
/// A week and a day: any weekly schedule with an interval opens within it, even when the
/// only opening is a week away and a DST change moves it by an hour.
const SEARCH_DAYS: i64 = 8;
/// No zone changes its offset twice within an hour, so probing hourly finds every change.
const PROBE_STEP_SECS: i64 = 3600;

/// Validated working hours: a zone and each weekday's intervals, ordered and disjoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingHours {
    timezone: Tz,
    /// Indexed by `Weekday::num_days_from_monday`.
    days: [Vec<Interval>; 7],
}

/// `[start, end)` in minutes after local midnight; `end` may be 1440 ("24:00").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    start: u16,
    end: u16,
}

impl Interval {
    fn contains(&self, minute: u16) -> bool {
        self.start <= minute && minute < self.end
    }

    fn start_time(&self) -> Option<NaiveTime> {
        NaiveTime::from_hms_opt(u32::from(self.start / 60), u32::from(self.start % 60), 0)
    }

    fn to_json(self) -> Value {
        Value::Array(vec![
            Value::String(format_time(self.start)),
            Value::String(format_time(self.end)),
        ])
    }
}

impl WorkingHours {
    /// Reads and validates `working_hours`, reporting every problem at once with its path
    /// (`working_hours.timezone`, `working_hours.days.mon[1]`, `working_hours.days.mon[1][0]`).
    pub fn from_json(value: &Value) -> Result<WorkingHours, Vec<FieldError>> {
        let Some(object) = value.as_object() else {
            return Err(vec![FieldError::new(
                FIELD,
                "must be an object with `timezone` and `days`",
            )]);
        };
        let mut errors = Vec::new();
        for key in object.keys() {
            if !matches!(key.as_str(), "timezone" | "days") {
                errors.push(FieldError::new(
                    format!("{FIELD}.{key}"),
                    "is not a known field",
                ));
            }
        }
        let timezone = parse_timezone(object.get("timezone"), &mut errors);
        let days = parse_days(object.get("days"), &mut errors);
        match (timezone, days) {
            (Some(timezone), Some(days)) if errors.is_empty() => {
                Ok(WorkingHours { timezone, days })
            }
            _ => Err(errors),
        }
    }

    /// `null` or an absent field means "always open", which is `None`.
    pub fn from_optional_json(
        value: Option<&Value>,
    ) -> Result<Option<WorkingHours>, Vec<FieldError>> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(value) => WorkingHours::from_json(value).map(Some),
        }
    }

    /// The canonical form: closed days left out, times as zero-padded `"HH:MM"`.
    pub fn to_json(&self) -> Value {
        let mut days = Map::new();
        for (key, intervals) in DAY_KEYS.iter().zip(&self.days) {
            if !intervals.is_empty() {
                let list = intervals.iter().map(|i| i.to_json()).collect();
                days.insert((*key).to_string(), Value::Array(list));
            }
        }
        let mut object = Map::new();
        object.insert(
            "timezone".into(),
            Value::String(self.timezone.name().into()),
        );
        object.insert("days".into(), Value::Object(days));
        Value::Object(object)
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// Open from an interval's first minute up to, not including, its end.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.timezone);
        // Seconds are dropped: 17:59:59 is still inside [09:00, 18:00).
        let minute = (local.hour() * 60 + local.minute()) as u16;
        self.intervals(local.weekday())
            .iter()
            .any(|interval| interval.contains(minute))
    }

    /// `at` when open; else the earliest later instant that is open, looking at most
    /// [`SEARCH_DAYS`] ahead. A start skipped by a spring-forward change opens at the end of
    /// the gap (if the interval outlasts it); a start repeated in autumn opens at its first
    /// occurrence, and again at its second if the interval closed in between.
    pub fn next_opening(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.is_open(at) {
            return Some(at);
        }
        if self.days.iter().all(Vec::is_empty) {
            return None;
        }
        let horizon = at
            .checked_add_signed(TimeDelta::days(SEARCH_DAYS))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        // Between two offset changes local time runs evenly, so each stretch can be searched
        // with plain arithmetic; a change itself opens when it lands inside an interval.
        let mut start = at;
        while start < horizon {
            let end = self.next_offset_change(start, horizon).unwrap_or(horizon);
            if let Some(opening) = self.first_opening_between(start, end) {
                return Some(opening);
            }
            start = end;
        }
        None
    }

    fn intervals(&self, day: Weekday) -> &[Interval] {
        &self.days[day.num_days_from_monday() as usize]
    }

    fn offset(&self, at: DateTime<Utc>) -> FixedOffset {
        self.timezone
            .offset_from_utc_datetime(&at.naive_utc())
            .fix()
    }

    /// The earliest open instant in `[start, end)`, the offset being constant there.
    fn first_opening_between(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if self.is_open(start) {
            return Some(start);
        }
        let offset = self.offset(start);
        let last_day = end.naive_utc().checked_add_offset(offset)?.date();
        let mut day = start.naive_utc().checked_add_offset(offset)?.date();
        while day <= last_day {
            if let Some(opening) = self.opening_on(day, offset, start, end) {
                return Some(opening);
            }
            day = day.succ_opt()?;
        }
        None
    }

    fn opening_on(
        &self,
        day: NaiveDate,
        offset: FixedOffset,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.intervals(day.weekday()).iter().find_map(|interval| {
            let local = day.and_time(interval.start_time()?);
            let instant = local.checked_sub_offset(offset)?.and_utc();
            (start <= instant && instant < end).then_some(instant)
        })
    }

    /// chrono-tz does not list a zone's transitions, so the offset is probed hourly and a
    /// change is bisected to the second (transitions fall on whole seconds).
    fn next_offset_change(
        &self,
        from: DateTime<Utc>,
        limit: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let before = self.offset(from);
        let limit = limit.timestamp();
        let mut low = from.timestamp();
        while low < limit {
            let high = low.saturating_add(PROBE_STEP_SECS).min(limit);
            if self.offset(DateTime::from_timestamp(high, 0)?) != before {
                return self.bisect(low, high, before);
            }
            low = high;
        }
        None
    }

    /// The first second in `(low, high]` whose offset is not `before`, which `high`'s is not.
    fn bisect(&self, mut low: i64, mut high: i64, before: FixedOffset) -> Option<DateTime<Utc>> {
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if self.offset(DateTime::from_timestamp(middle, 0)?) == before {
                low = middle;
            } else {
                high = middle;
            }
        }
        DateTime::from_timestamp(high, 0)
    }
}

impl serde::Serialize for WorkingHours {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// For stored values (a JSON column); requests go through `from_json` to keep field paths.
impl<'de> serde::Deserialize<'de> for WorkingHours {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        WorkingHours::from_json(&value).map_err(|errors| {
            let described: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            serde::de::Error::custom(described.join("; "))
        })
    }
}

fn parse_timezone(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<Tz> {
    let field = format!("{FIELD}.timezone");
    let parsed = match value {
        None => Err("is required"),
        Some(Value::String(name)) => name
            .parse::<Tz>()
            .map_err(|_| "is not a known IANA time zone (such as \"Europe/Moscow\")"),
        Some(_) => Err("must be an IANA time zone name such as \"Europe/Moscow\""),
    };
    parsed
        .map_err(|message| errors.push(FieldError::new(field, message)))
        .ok()
}

fn parse_days(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<[Vec<Interval>; 7]> {
    let field = format!("{FIELD}.days");
    let object = match value {
        Some(Value::Object(object)) => object,
        None => {
            errors.push(FieldError::new(field, "is required"));
            return None;
        }
        Some(_) => {
            errors.push(FieldError::new(
                field,
                "must be an object keyed by day (mon, tue, wed, thu, fri, sat, sun)",
            ));
            return None;
        }
    };
    let mut days: [Vec<Interval>; 7] = Default::default();
    for (key, value) in object {
        let path = format!("{field}.{key}");
        match DAY_KEYS.iter().position(|day| day == key) {
            Some(index) => days[index] = parse_day(&path, value, errors),
            None => errors.push(FieldError::new(
                path,
                "is not a day: use mon, tue, wed, thu, fri, sat or sun",
            )),
        }
    }
    Some(days)
}

fn parse_day(path: &str, value: &Value, errors: &mut Vec<FieldError>) -> Vec<Interval> {
    let Some(items) = value.as_array() else {
        errors.push(FieldError::new(
            path,
            "must be a list of [\"HH:MM\", \"HH:MM\"] intervals",
        ));
        return Vec::new();
    };
    if items.len() > MAX_INTERVALS_PER_DAY {
        errors.push(FieldError::new(
            path,
            format!(
                "has {} intervals; at most {MAX_INTERVALS_PER_DAY} are allowed a day",
                items.len()
            ),
        ));
        return Vec::new();
    }
    let mut intervals: Vec<Interval> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let path = format!("{path}[{index}]");
        let Some(interval) = parse_interval(&path, item, errors) else {
            continue;
        };
        if let Some(previous) = intervals.last()
            && interval.start < previous.end
        {
            let message = if interval.start < previous.start {
                "starts before the previous interval: list a day's intervals in order".into()
            } else {
                format!(
                    "overlaps the previous interval, which ends at {}",
                    format_time(previous.end)
                )
            };
            errors.push(FieldError::new(path, message));
            continue;
        }
        intervals.push(interval);
    }
    intervals
}

fn parse_interval(path: &str, value: &Value, errors: &mut Vec<FieldError>) -> Option<Interval> {
    let Some([start, end]) = value.as_array().map(Vec::as_slice) else {
        errors.push(FieldError::new(
            path,
            "must be a pair of times [\"HH:MM\", \"HH:MM\"]",
        ));
        return None;
    };
    let start = match parse_time(start) {
        Some(minute) if minute < MINUTES_PER_DAY => Some(minute),
        Some(_) => {
            errors.push(FieldError::new(
                format!("{path}[0]"),
                "\"24:00\" can only end an interval",
            ));
            None
        }
        None => {
            errors.push(FieldError::new(
                format!("{path}[0]"),
                "must be a time as \"HH:MM\" (00:00 to 23:59)",
            ));
            None
        }
    };
    let end = parse_time(end);
    if end.is_none() {
        errors.push(FieldError::new(
            format!("{path}[1]"),
            "must be a time as \"HH:MM\" (00:00 to 23:59, or 24:00 for the end of the day)",
        ));
    }
    let (start, end) = (start?, end?);
    if end <= start {
        errors.push(FieldError::new(
            path,
            "must end after it starts (hours past midnight go on the next day's list)",
        ));
        return None;
    }
    Some(Interval { start, end })
}

/// Minutes after midnight of `"HH:MM"`, where `"24:00"` is the end of the day.
fn parse_time(value: &Value) -> Option<u16> {
    let text = value.as_str()?;
    let [h1, h2, b':', m1, m2] = *text.as_bytes() else {
        return None;
    };
    let digit = |b: u8| b.is_ascii_digit().then(|| u16::from(b - b'0'));
    let hours = digit(h1)? * 10 + digit(h2)?;
    let minutes = digit(m1)? * 10 + digit(m2)?;
    let minute = hours * 60 + minutes;
    (minutes < 60 && minute <= MINUTES_PER_DAY).then_some(minute)
}

fn format_time(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// The time, injected so that tests can set it (the app state holds an `Arc<dyn Clock>`).
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until told otherwise. Built in every profile, not only under
/// `cfg(test)`, because the integration tests put it in the app state.
#[derive(Debug)]
pub struct FixedClock {
    at: Mutex<DateTime<Utc>>,
}

impl FixedClock {
    pub fn new(at: DateTime<Utc>) -> FixedClock {
        FixedClock { at: Mutex::new(at) }
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.lock() = at;
    }

    /// Saturates at chrono's limits rather than panicking.
    pub fn advance(&self, by: TimeDelta) {
        let mut at = self.lock();
        *at = at
            .checked_add_signed(by)
            .unwrap_or(if by < TimeDelta::zero() {
                DateTime::<Utc>::MIN_UTC
            } else {
                DateTime::<Utc>::MAX_UTC
            });
    }

    /// A panic elsewhere while holding the lock cannot leave a half-written timestamp.
    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        self.at.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test timestamps are valid RFC 3339")
            .with_timezone(&Utc)
    }

    fn hours(value: Value) -> WorkingHours {
        WorkingHours::from_json(&value).expect("test schedules are valid")
    }

    fn moscow_office() -> WorkingHours {
        hours(json!({
            "timezone": "Europe/Moscow",
            "days": {
                "mon": [["09:00", "18:00"]],
                "tue": [["09:00", "13:00"], ["14:00", "18:00"]],
                "wed": [["09:00", "18:00"]],
                "thu": [["09:00", "18:00"]],
                "fri": [["09:00", "18:00"]],
            }
        }))
    }

    fn errors(value: Value) -> Vec<(String, String)> {
        match WorkingHours::from_json(&value) {
            Ok(hours) => panic!("expected errors, got {hours:?}"),
            Err(errors) => errors.into_iter().map(|e| (e.field, e.message)).collect(),
        }
    }

    fn fields(value: Value) -> Vec<String> {
        errors(value).into_iter().map(|(field, _)| field).collect()
    }

    fn with_day(day: Value) -> Value {
        json!({"timezone": "UTC", "days": {"mon": day}})
    }

    // 2026-03-02 is a Monday; Moscow is UTC+3 all year.

    #[test]
    fn start_is_inclusive_and_end_exclusive() {
        let office = moscow_office();
        assert!(!office.is_open(utc("2026-03-02T05:59:59Z")));
        assert!(office.is_open(utc("2026-03-02T06:00:00Z")));
        assert!(office.is_open(utc("2026-03-02T14:59:59.999Z")));
        assert!(!office.is_open(utc("2026-03-02T15:00:00Z")));
    }

    #[test]
    fn a_lunch_break_is_closed() {
        let office = moscow_office();
        assert!(office.is_open(utc("2026-03-03T09:59:00Z")));
        assert!(!office.is_open(utc("2026-03-03T10:00:00Z")));
        assert!(!office.is_open(utc("2026-03-03T10:59:59Z")));
        assert!(office.is_open(utc("2026-03-03T11:00:00Z")));
    }

    #[test]
    fn next_opening_is_now_when_open() {
        let at = utc("2026-03-02T07:13:21.5Z");
        assert_eq!(moscow_office().next_opening(at), Some(at));
    }

    #[test]
    fn next_opening_later_the_same_day() {
        let office = moscow_office();
        assert_eq!(
            office.next_opening(utc("2026-03-03T10:30:00Z")),
            Some(utc("2026-03-03T11:00:00Z"))
        );
        assert_eq!(
            office.next_opening(utc("2026-03-02T00:00:00Z")),
            Some(utc("2026-03-02T06:00:00Z"))
        );
    }

    #[test]
    fn next_opening_the_next_day() {
        assert_eq!(
            moscow_office().next_opening(utc("2026-03-02T15:00:00Z")),
            Some(utc("2026-03-03T06:00:00Z"))
        );
    }

    #[test]
    fn next_opening_over_the_weekend() {
        let office = moscow_office();
        let monday = Some(utc("2026-03-09T06:00:00Z"));
        assert_eq!(office.next_opening(utc("2026-03-06T15:00:00Z")), monday);
        assert_eq!(office.next_opening(utc("2026-03-07T12:00:00Z")), monday);
        assert_eq!(office.next_opening(utc("2026-03-08T20:59:59Z")), monday);
    }

    #[test]
    fn next_opening_wraps_after_the_last_interval_of_the_week() {
        let once_a_week = hours(json!({
            "timezone": "Europe/Moscow",
            "days": {"mon": [["09:00", "10:00"]]}
        }));
        assert_eq!(
            once_a_week.next_opening(utc("2026-03-02T07:00:00Z")),
            Some(utc("2026-03-09T06:00:00Z"))
        );
        let sunday_only = hours(json!({
            "timezone": "Europe/Moscow",
            "days": {"sun": [["20:00", "21:00"]]}
        }));
        assert_eq!(
            sunday_only.next_opening(utc("2026-03-08T18:00:00Z")),
            Some(utc("2026-03-15T17:00:00Z"))
        );
    }

    #[test]
    fn no_intervals_never_open() {
        let closed = hours(json!({"timezone": "Europe/Moscow", "days": {"mon": []}}));
        assert!(!closed.is_open(utc("2026-03-02T07:00:00Z")));
        assert_eq!(closed.next_opening(utc("2026-03-02T07:00:00Z")), None);
    }

    #[test]
    fn tokyo_monday_starts_on_sunday_in_utc() {
        let tokyo = hours(json!({
            "timezone": "Asia/Tokyo",
            "days": {"mon": [["09:00", "18:00"]]}
        }));
        // Monday 09:00 JST is Monday 00:00 UTC; Sunday 23:59 UTC is Monday 08:59 JST.
        assert!(!tokyo.is_open(utc("2026-03-01T23:59:00Z")));
        assert!(tokyo.is_open(utc("2026-03-02T00:00:00Z")));
        assert!(!tokyo.is_open(utc("2026-03-02T09:00:00Z")));
        assert_eq!(
            tokyo.next_opening(utc("2026-03-01T15:00:00Z")),
            Some(utc("2026-03-02T00:00:00Z"))
        );
    }

    #[test]
    fn los_angeles_friday_lasts_into_saturday_utc() {
        let la = hours(json!({
            "timezone": "America/Los_Angeles",
            "days": {"fri": [["09:00", "18:00"]]}
        }));
        // PDT (UTC-7) in May: Friday 17:30 local is Saturday 00:30 UTC.
        assert!(la.is_open(utc("2026-05-09T00:30:00Z")));
        assert!(!la.is_open(utc("2026-05-09T01:00:00Z")));
        assert_eq!(
            la.next_opening(utc("2026-05-09T01:00:00Z")),
            Some(utc("2026-05-15T16:00:00Z"))
        );
    }

    // Berlin, 2026: clocks go 02:00 CET -> 03:00 CEST on Sunday 29 March (01:00 UTC) and
    // 03:00 CEST -> 02:00 CET on Sunday 25 October (01:00 UTC).

    fn berlin_sunday(intervals: Value) -> WorkingHours {
        hours(json!({"timezone": "Europe/Berlin", "days": {"sun": intervals}}))
    }

    #[test]
    fn a_start_in_the_spring_gap_opens_when_the_gap_ends() {
        let hours = berlin_sunday(json!([["02:30", "05:00"]]));
        assert_eq!(
            hours.next_opening(utc("2026-03-28T12:00:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
        assert!(hours.is_open(utc("2026-03-29T01:00:00Z")));
        assert!(!hours.is_open(utc("2026-03-29T00:59:59Z")));
    }

    #[test]
    fn an_interval_inside_the_spring_gap_is_skipped() {
        let hours = berlin_sunday(json!([["02:00", "02:30"]]));
        assert_eq!(
            hours.next_opening(utc("2026-03-28T12:00:00Z")),
            Some(utc("2026-04-05T00:00:00Z"))
        );
    }

    #[test]
    fn times_after_the_spring_change_use_summer_time() {
        let hours = hours(json!({
            "timezone": "Europe/Berlin",
            "days": {"sat": [["09:00", "18:00"]], "sun": [["09:00", "18:00"]]}
        }));
        assert_eq!(
            hours.next_opening(utc("2026-03-28T00:00:00Z")),
            Some(utc("2026-03-28T08:00:00Z"))
        );
        assert_eq!(
            hours.next_opening(utc("2026-03-28T17:00:00Z")),
            Some(utc("2026-03-29T07:00:00Z"))
        );
    }

    #[test]
    fn an_ambiguous_autumn_start_takes_the_earlier_instant() {
        let hours = berlin_sunday(json!([["02:30", "04:00"]]));
        assert_eq!(
            hours.next_opening(utc("2026-10-24T12:00:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn the_repeated_autumn_hour_opens_again() {
        let hours = berlin_sunday(json!([["02:15", "02:45"]]));
        // 02:50 CEST is closed; 02:15 CET (01:15 UTC) is the same wall time once more.
        assert!(!hours.is_open(utc("2026-10-25T00:50:00Z")));
        assert_eq!(
            hours.next_opening(utc("2026-10-25T00:50:00Z")),
            Some(utc("2026-10-25T01:15:00Z"))
        );
    }

    #[test]
    fn falling_back_into_an_interval_opens_at_the_change() {
        let hours = berlin_sunday(json!([["01:00", "02:30"]]));
        // 02:40 CEST is closed; the clock then falls back to 02:00 CET, inside the interval.
        assert_eq!(
            hours.next_opening(utc("2026-10-25T00:40:00Z")),
            Some(utc("2026-10-25T01:00:00Z"))
        );
    }

    #[test]
    fn times_after_the_autumn_change_use_winter_time() {
        let hours = berlin_sunday(json!([["09:00", "18:00"]]));
        assert_eq!(
            hours.next_opening(utc("2026-10-24T12:00:00Z")),
            Some(utc("2026-10-25T08:00:00Z"))
        );
    }

    /// The definition itself: the first whole minute at or after `at` that is open.
    fn scan_minutes(hours: &WorkingHours, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (0..=SEARCH_DAYS * 24 * 60)
            .map(|minute| at + TimeDelta::minutes(minute))
            .find(|&instant| hours.is_open(instant))
    }

    #[test]
    fn next_opening_agrees_with_a_minute_by_minute_scan_around_dst() {
        let schedules = [
            berlin_sunday(json!([["02:30", "05:00"]])),
            berlin_sunday(json!([["01:00", "02:30"], ["02:40", "02:50"]])),
            hours(json!({
                "timezone": "Europe/Berlin",
                "days": {
                    "sat": [["22:00", "24:00"]],
                    "sun": [["00:00", "02:10"], ["02:20", "03:00"], ["03:05", "03:06"]],
                    "wed": [["12:00", "12:01"]],
                }
            })),
        ];
        for around in ["2026-03-28T20:00:00Z", "2026-10-24T20:00:00Z"] {
            let from = utc(around);
            for hours in &schedules {
                for step in 0..(10 * 60 / 7) {
                    let at = from + TimeDelta::minutes(7 * step);
                    assert_eq!(
                        hours.next_opening(at),
                        scan_minutes(hours, at),
                        "at {at} for {}",
                        hours.to_json()
                    );
                }
            }
        }
    }

    #[test]
    fn next_opening_agrees_with_a_scan_in_odd_zones() {
        let days = json!({
            "mon": [["00:00", "00:30"], ["09:00", "18:00"]],
            "thu": [["23:30", "24:00"]],
            "fri": [["00:00", "00:10"], ["12:00", "13:00"]],
            "sat": [["23:50", "24:00"]],
            "sun": [["00:00", "00:40"], ["01:50", "02:20"]],
        });
        // Apia skipped Friday 30 December 2011; Santiago springs forward at midnight;
        // Lord Howe moves its clocks by half an hour.
        let cases = [
            ("Pacific/Apia", "2011-12-29T00:00:00Z"),
            ("America/Santiago", "2026-09-05T12:00:00Z"),
            ("America/Santiago", "2026-04-04T12:00:00Z"),
            ("Australia/Lord_Howe", "2026-10-03T12:00:00Z"),
            ("Australia/Lord_Howe", "2026-04-04T12:00:00Z"),
        ];
        for (zone, around) in cases {
            let hours = hours(json!({"timezone": zone, "days": days}));
            let from = utc(around);
            for step in 0..(36 * 60 / 13) {
                let at = from + TimeDelta::minutes(13 * step);
                assert_eq!(
                    hours.next_opening(at),
                    scan_minutes(&hours, at),
                    "{zone} at {at}"
                );
            }
        }
    }

    #[test]
    fn an_interval_may_end_at_midnight() {
        let late = hours(json!({
            "timezone": "Europe/Moscow",
            "days": {"mon": [["22:00", "24:00"]]}
        }));
        assert!(late.is_open(utc("2026-03-02T20:59:59Z")));
        assert!(!late.is_open(utc("2026-03-02T21:00:00Z")));
        assert_eq!(late.to_json()["days"]["mon"], json!([["22:00", "24:00"]]));
    }

    #[test]
    fn midnight_to_midnight_runs_across_days() {
        let around = hours(json!({
            "timezone": "Europe/Moscow",
            "days": {"mon": [["20:00", "24:00"]], "tue": [["00:00", "02:00"]]}
        }));
        let at = utc("2026-03-02T21:00:00Z");
        assert!(around.is_open(at));
        assert_eq!(around.next_opening(at), Some(at));
        assert!(!around.is_open(utc("2026-03-02T23:00:00Z")));
        assert_eq!(
            around.next_opening(utc("2026-03-02T23:00:00Z")),
            Some(utc("2026-03-09T17:00:00Z"))
        );
    }

    #[test]
    fn to_json_is_canonical_and_round_trips() {
        let office = moscow_office();
        let canonical = office.to_json();
        assert_eq!(canonical["timezone"], "Europe/Moscow");
        assert_eq!(
            canonical["days"]["tue"],
            json!([["09:00", "13:00"], ["14:00", "18:00"]])
        );
        assert!(canonical["days"].get("sat").is_none());
        assert_eq!(WorkingHours::from_json(&canonical), Ok(office.clone()));
        let through_serde: WorkingHours =
            serde_json::from_value(serde_json::to_value(&office).expect("serializes"))
                .expect("deserializes");
        assert_eq!(through_serde, office);
        let empty_day = hours(json!({"timezone": "UTC", "days": {"mon": []}}));
        assert_eq!(empty_day.to_json(), json!({"timezone": "UTC", "days": {}}));
    }

    #[test]
    fn deserialize_reports_the_field_path() {
        let result: Result<WorkingHours, _> =
            serde_json::from_value(json!({"timezone": "Mars/Base", "days": {}}));
        let message = result.expect_err("an unknown zone").to_string();
        assert!(message.contains("working_hours.timezone"), "{message}");
    }

    #[test]
    fn null_or_absent_is_always_open() {
        assert_eq!(WorkingHours::from_optional_json(None), Ok(None));
        assert_eq!(
            WorkingHours::from_optional_json(Some(&Value::Null)),
            Ok(None)
        );
        let value = json!({"timezone": "UTC", "days": {}});
        assert!(matches!(
            WorkingHours::from_optional_json(Some(&value)),
            Ok(Some(_))
        ));
        assert_eq!(
            fields(Value::Null),
            ["working_hours"],
            "from_json itself wants an object"
        );
    }

    #[test]
    fn rejects_what_is_not_an_object() {
        for value in [json!([]), json!("Europe/Moscow"), json!(1)] {
            assert_eq!(
                errors(value),
                [(
                    "working_hours".to_string(),
                    "must be an object with `timezone` and `days`".to_string()
                )]
            );
        }
    }

    #[test]
    fn rejects_unknown_top_level_keys() {
        assert_eq!(
            errors(json!({"timezone": "UTC", "days": {}, "holidays": []})),
            [(
                "working_hours.holidays".to_string(),
                "is not a known field".to_string()
            )]
        );
    }

    #[test]
    fn rejects_a_missing_or_unknown_timezone() {
        assert_eq!(
            errors(json!({"days": {}})),
            [(
                "working_hours.timezone".to_string(),
                "is required".to_string()
            )]
        );
        for zone in [json!("Europe/Mordor"), json!("europe/moscow"), json!("")] {
            let found = errors(json!({"timezone": zone, "days": {}}));
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].0, "working_hours.timezone");
            assert!(found[0].1.contains("not a known IANA time zone"));
        }
        assert_eq!(
            fields(json!({"timezone": 3, "days": {}})),
            ["working_hours.timezone"]
        );
    }

    #[test]
    fn rejects_missing_or_malformed_days() {
        assert_eq!(
            errors(json!({"timezone": "UTC"})),
            [("working_hours.days".to_string(), "is required".to_string())]
        );
        assert_eq!(
            fields(json!({"timezone": "UTC", "days": [["09:00", "18:00"]]})),
            ["working_hours.days"]
        );
    }

    #[test]
    fn rejects_an_unknown_day_key() {
        let mut found = errors(json!({"timezone": "UTC", "days": {"monday": [], "Mon": []}}));
        found.sort();
        let fields: Vec<&str> = found.iter().map(|(field, _)| field.as_str()).collect();
        assert_eq!(
            fields,
            ["working_hours.days.Mon", "working_hours.days.monday"]
        );
        assert!(found[0].1.contains("mon, tue, wed, thu, fri, sat or sun"));
    }

    #[test]
    fn rejects_a_day_that_is_not_a_list() {
        for day in [json!(null), json!("09:00-18:00"), json!({"from": "09:00"})] {
            assert_eq!(fields(with_day(day)), ["working_hours.days.mon"]);
        }
    }

    #[test]
    fn rejects_more_than_ten_intervals_a_day() {
        let eleven: Vec<Value> = (0..11)
            .map(|hour| json!([format!("{hour:02}:00"), format!("{hour:02}:30")]))
            .collect();
        assert_eq!(
            errors(with_day(json!(eleven))),
            [(
                "working_hours.days.mon".to_string(),
                "has 11 intervals; at most 10 are allowed a day".to_string()
            )]
        );
        let ten = json!(eleven[..10]);
        assert!(WorkingHours::from_json(&with_day(ten)).is_ok());
    }

    #[test]
    fn rejects_an_interval_that_is_not_a_pair() {
        for interval in [
            json!("09:00"),
            json!(["09:00"]),
            json!(["09:00", "12:00", "18:00"]),
            json!({"start": "09:00", "end": "18:00"}),
        ] {
            assert_eq!(
                errors(with_day(json!([["08:00", "08:30"], interval]))),
                [(
                    "working_hours.days.mon[1]".to_string(),
                    "must be a pair of times [\"HH:MM\", \"HH:MM\"]".to_string()
                )]
            );
        }
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in [
            json!("9:00"),
            json!("09:0"),
            json!("09.00"),
            json!("25:00"),
            json!("12:60"),
            json!("24:01"),
            json!("+9:00"),
            json!(" 9:00"),
            json!("09:00:00"),
            json!(900),
            json!(null),
        ] {
            assert_eq!(
                fields(with_day(json!([[bad, "18:00"]]))),
                ["working_hours.days.mon[0][0]"],
                "start {bad}"
            );
            assert_eq!(
                fields(with_day(json!([["08:00", bad]]))),
                ["working_hours.days.mon[0][1]"],
                "end {bad}"
            );
        }
        assert_eq!(
            fields(with_day(json!([["x", "y"]]))),
            [
                "working_hours.days.mon[0][0]",
                "working_hours.days.mon[0][1]"
            ]
        );
    }

    #[test]
    fn rejects_24_00_as_a_start() {
        assert_eq!(
            errors(with_day(json!([["24:00", "24:00"]]))),
            [(
                "working_hours.days.mon[0][0]".to_string(),
                "\"24:00\" can only end an interval".to_string()
            )]
        );
    }

    #[test]
    fn rejects_an_end_not_after_its_start() {
        for interval in [json!(["18:00", "09:00"]), json!(["09:00", "09:00"])] {
            let found = errors(with_day(json!([interval])));
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].0, "working_hours.days.mon[0]");
            assert!(found[0].1.starts_with("must end after it starts"));
        }
    }

    #[test]
    fn rejects_overlapping_intervals() {
        assert_eq!(
            errors(with_day(json!([["09:00", "13:00"], ["12:00", "18:00"]]))),
            [(
                "working_hours.days.mon[1]".to_string(),
                "overlaps the previous interval, which ends at 13:00".to_string()
            )]
        );
        // Touching is not overlapping.
        assert!(
            WorkingHours::from_json(&with_day(json!([["09:00", "13:00"], ["13:00", "18:00"]])))
                .is_ok()
        );
    }

    #[test]
    fn rejects_intervals_out_of_order() {
        assert_eq!(
            errors(with_day(json!([["14:00", "18:00"], ["09:00", "13:00"]]))),
            [(
                "working_hours.days.mon[1]".to_string(),
                "starts before the previous interval: list a day's intervals in order".to_string()
            )]
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let mut found = fields(json!({
            "timezone": "Nowhere/City",
            "days": {
                "mon": [["09:00", "18:00"], ["17:00", "19:00"]],
                "tue": [["9", "18:00"]],
                "funday": [],
            },
            "extra": true,
        }));
        found.sort();
        assert_eq!(
            found,
            [
                "working_hours.days.funday",
                "working_hours.days.mon[1]",
                "working_hours.days.tue[0][0]",
                "working_hours.extra",
                "working_hours.timezone",
            ]
        );
    }

    #[test]
    fn fixed_clock_stands_still_until_moved() {
        let start = utc("2026-03-02T06:00:00Z");
        let clock = FixedClock::new(start);
        assert_eq!(clock.now(), start);
        assert_eq!(clock.now(), start);
        clock.advance(TimeDelta::minutes(90));
        assert_eq!(clock.now(), utc("2026-03-02T07:30:00Z"));
        clock.advance(TimeDelta::seconds(-30));
        assert_eq!(clock.now(), utc("2026-03-02T07:29:30Z"));
        clock.set(utc("2030-01-01T00:00:00Z"));
        assert_eq!(clock.now(), utc("2030-01-01T00:00:00Z"));
        clock.advance(TimeDelta::MAX);
        assert_eq!(clock.now(), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn clocks_serve_as_trait_objects() {
        let clocks: Vec<std::sync::Arc<dyn Clock>> = vec![
            std::sync::Arc::new(SystemClock),
            std::sync::Arc::new(FixedClock::new(utc("2026-03-02T06:00:00Z"))),
        ];
        let before = Utc::now();
        let system = clocks[0].now();
        assert!(system >= before && system <= Utc::now());
        assert_eq!(clocks[1].now(), utc("2026-03-02T06:00:00Z"));
    }
}
