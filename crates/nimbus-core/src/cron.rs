//! Cron expressions of schedules: five fields, `minute hour day-of-month month
//! day-of-week`, each `*`, a value, a range `a-b`, a step `*/n` or `a-b/n`, or
//! a list of those; month and weekday names (`jan`, `mon`); `@hourly`,
//! `@daily`, `@weekly`, `@monthly`, `@yearly`. As in Vixie cron, when both
//! day fields are restricted a day matching either one matches. Weekday 0 and
//! 7 are Sunday.

/// A parsed expression: the allowed values of each field as bit sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_any: bool,
    weekdays_any: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn field(text: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |v: &str| -> Result<u32, String> {
        let lower = v.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + min);
        }
        let n: u32 = v
            .parse()
            .map_err(|_| format!("`{v}` is not a valid {name}"))?;
        if n < min || n > max {
            return Err(format!("{name} `{v}` is out of range ({min} to {max})"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("`{s}` is not a valid step in `{part}`"))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if step > 1 => (value(r)?, max),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if lo > hi {
            return Err(format!("the range `{range}` runs backwards"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Cron {
    pub fn parse(text: &str) -> Result<Self, String> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            t if t.starts_with('@') => return Err(format!("unknown shortcut `{t}`")),
            t => t,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "a cron expression has 5 fields (minute hour day month weekday), not {}",
                fields.len()
            ));
        };
        Ok(Self {
            minutes: field(minute, "minute", 0, 59, &[])?,
            hours: field(hour, "hour", 0, 23, &[])? as u32,
            days: field(day, "day of month", 1, 31, &[])? as u32,
            months: field(month, "month", 1, 12, &MONTHS)? as u16,
            weekdays: {
                // 7 is Sunday too.
                let bits = field(weekday, "weekday", 0, 7, &WEEKDAYS)?;
                ((bits | (bits >> 7)) & 0x7f) as u8
            },
            days_any: day == "*",
            weekdays_any: weekday == "*",
        })
    }

    pub fn minute(&self, m: u32) -> bool {
        self.minutes & (1 << m) != 0
    }

    pub fn hour(&self, h: u32) -> bool {
        self.hours & (1 << h) != 0
    }

    pub fn month(&self, m: u32) -> bool {
        self.months & (1 << m) != 0
    }

    /// Whether the day (of month `day`, weekday `weekday` with 0 = Sunday) matches.
    pub fn day(&self, day: u32, weekday: u32) -> bool {
        let by_day = self.days & (1 << day) != 0;
        let by_weekday = self.weekdays & (1 << weekday) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (true, false) => by_weekday,
            (false, true) => by_day,
            (false, false) => by_day || by_weekday,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_ranges_steps_lists_and_names() {
        let c = Cron::parse("*/15 9-17 * * mon-fri").unwrap();
        assert!(c.minute(0) && c.minute(45) && !c.minute(5));
        assert!(c.hour(9) && c.hour(17) && !c.hour(8));
        assert!(c.day(3, 1) && !c.day(3, 0) && !c.day(3, 6));
        let c = Cron::parse("0 3 1,15 * *").unwrap();
        assert!(c.day(1, 4) && c.day(15, 0) && !c.day(2, 1));
        // Both day fields restricted: either matches.
        let c = Cron::parse("0 0 13 * fri").unwrap();
        assert!(c.day(13, 2) && c.day(6, 5) && !c.day(6, 4));
        let c = Cron::parse("0 0 * jan,jul 0").unwrap();
        assert!(c.month(1) && c.month(7) && !c.month(2) && c.day(4, 0));
        assert!(Cron::parse("0 0 * * 7").unwrap().day(1, 0), "7 is Sunday");
        let weekend = Cron::parse("0 0 * * sat-7").unwrap();
        assert!(weekend.day(1, 6) && weekend.day(1, 0) && !weekend.day(1, 1));
        assert!(Cron::parse("5/20 * * * *").unwrap().minute(45));
        assert_eq!(Cron::parse("@daily"), Cron::parse("0 0 * * *"));
    }

    #[test]
    fn bad_expressions_say_why() {
        for (expr, why) in [
            ("0 3 * *", "5 fields"),
            ("60 * * * *", "minute `60` is out of range"),
            ("* 24 * * *", "hour `24`"),
            ("* * 0 * *", "day of month `0`"),
            ("* * * 13 *", "month `13`"),
            ("* * * * 8", "weekday `8`"),
            ("*/0 * * * *", "not a valid step"),
            ("5-1 * * * *", "runs backwards"),
            ("x * * * *", "`x` is not a valid minute"),
            ("@often", "unknown shortcut"),
        ] {
            let e = Cron::parse(expr).expect_err(expr);
            assert!(e.contains(why), "{expr}: {e}");
        }
    }
}
