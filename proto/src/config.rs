//! Cluster-wide options: their names, defaults and checks. Operators set them with
//! `tidepool config set KEY VALUE`; the monitors keep them in the replicated state and every
//! daemon reads them from there.

/// One option.
#[derive(Clone, Copy, Debug)]
pub struct OptionSpec {
    /// Its name, as Ceph spells the equivalent where there is one.
    pub name: &'static str,
    /// Its value when not set.
    pub default: u64,
    /// The smallest value allowed.
    pub min: u64,
    /// What it means, with its unit.
    pub help: &'static str,
}

/// Every option.
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "mon_osd_down_out_interval",
        default: 600,
        min: 0,
        help: "seconds a down OSD stays in before the monitors mark it out (0: never)",
    },
    OptionSpec {
        name: "mon_osd_report_timeout",
        default: 30,
        min: 2,
        help: "seconds without a beacon after which the monitors mark an OSD down",
    },
    OptionSpec {
        name: "mon_osd_full_percent",
        default: 95,
        min: 1,
        help:
            "percent of an OSD's size used at which it is full: its PGs refuse writes that add data",
    },
    OptionSpec {
        name: "mon_osd_nearfull_percent",
        default: 85,
        min: 1,
        help: "percent of an OSD's size used at which health warns that it is nearly full",
    },
    OptionSpec {
        name: "mon_osd_warn_num_repaired",
        default: 10,
        min: 0,
        help: "bad copies an OSD's reads found and served around since it started, past which \
               health warns (OSD_TOO_MANY_REPAIRS)",
    },
    OptionSpec {
        name: "mon_osd_min_down_reporters",
        default: 2,
        min: 1,
        help: "distinct OSDs that must report a peer silent before it is marked down",
    },
    OptionSpec {
        name: "osd_heartbeat_grace",
        default: 6,
        min: 1,
        help: "seconds of silence after which an OSD reports a peer",
    },
    OptionSpec {
        name: "osd_max_backfills",
        default: 1,
        min: 1,
        help: "backfills an OSD drives at once as a PG's primary",
    },
    OptionSpec {
        name: "osd_pg_log_entries",
        default: 3000,
        min: 10,
        help: "log entries kept per PG; a holder further behind is backfilled",
    },
    OptionSpec {
        name: "osd_recovery_max_active",
        default: 3,
        min: 1,
        help: "recovery pushes an OSD sends, and applies, at once",
    },
    OptionSpec {
        name: "osd_recovery_max_bytes_per_sec",
        default: 0,
        min: 0,
        help: "bytes per second an OSD spends on recovery (0: unlimited)",
    },
    OptionSpec {
        name: "osd_scrub_auto_repair",
        default: 1,
        min: 0,
        help: "1: a scheduled scrub repairs what has a provably good copy; 0: it only reports",
    },
    OptionSpec {
        name: "osd_scrub_bytes_per_second",
        default: 16 << 20,
        min: 0,
        help: "bytes per second a primary's deep scrubs read from each holder (0: unlimited)",
    },
    OptionSpec {
        name: "osd_scrub_interval",
        default: 24 * 3600,
        min: 1,
        help: "seconds between two scrubs of a PG",
    },
    OptionSpec {
        name: "osd_deep_scrub_interval",
        default: 7 * 24 * 3600,
        min: 1,
        help: "seconds between two deep scrubs of a PG; health warns past 1.75 times this",
    },
    OptionSpec {
        name: "osd_max_scrubs",
        default: 1,
        min: 1,
        help: "scheduled scrubs an OSD leads at once",
    },
];

/// The spec of `name`.
pub fn spec(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.name == name)
}

/// Checks `value` for option `name`: the value it parses to, or why it is refused.
pub fn check(name: &str, value: &str) -> Result<u64, String> {
    let spec = spec(name).ok_or_else(|| {
        let names: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
        format!("unknown option {name:?}; options: {}", names.join(", "))
    })?;
    let parsed: u64 = value
        .parse()
        .map_err(|_| format!("{name} takes a whole number ({}), not {value:?}", spec.help))?;
    if parsed < spec.min {
        return Err(format!("{name} must be at least {}", spec.min));
    }
    Ok(parsed)
}

/// The value of `name` among `set` (pairs of option and text), else its default.
pub fn get<'a>(set: impl IntoIterator<Item = (&'a str, &'a str)>, name: &str) -> u64 {
    let default = spec(name).map_or(0, |s| s.default);
    set.into_iter()
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| check(name, value).ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule: values are checked against their option, and unset options read as defaults.
    #[test]
    fn options_check_and_default() {
        assert_eq!(check("mon_osd_down_out_interval", "30"), Ok(30));
        assert!(check("mon_osd_down_out_interval", "-1").is_err());
        assert!(check("mon_osd_report_timeout", "1").is_err());
        assert!(check("no_such_option", "1").is_err());
        assert_eq!(get([], "mon_osd_down_out_interval"), 600);
        assert_eq!(
            get(
                [("mon_osd_down_out_interval", "5")],
                "mon_osd_down_out_interval"
            ),
            5
        );
    }
}
