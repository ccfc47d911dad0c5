//! Edges of the cache (SPEC §5) that the crash, loom and model-vs-real targets do not reach.
//! Added for the mutation gate (issue 8): each test here kills mutants of src/cache.rs that
//! survived those targets.

mod support;

use proptest::prelude::*;
use trainctl::cache;

/// Instants with their UTC text, computed independently (Python's `datetime`): the epoch, leap
/// days in a leap century (2000) and an ordinary leap year, the day after a leap day, the
/// non-leap century 2100, and the last microsecond the format can hold.
const KNOWN: &[(u64, &str)] = &[
    (0, "1970-01-01T00:00:00.000000Z"),
    (68_169_600_000_000, "1972-02-29T00:00:00.000000Z"),
    (951_782_400_000_000, "2000-02-29T00:00:00.000000Z"),
    (1_700_000_000_123_456, "2023-11-14T22:13:20.123456Z"),
    (1_709_164_799_999_999, "2024-02-28T23:59:59.999999Z"),
    (1_709_251_200_000_000, "2024-03-01T00:00:00.000000Z"),
    (4_102_444_799_999_999, "2099-12-31T23:59:59.999999Z"),
    (4_107_542_400_000_000, "2100-03-01T00:00:00.000000Z"),
    (253_402_300_799_999_999, "9999-12-31T23:59:59.999999Z"),
];

/// Record timestamps (`created_at`) and the timestamped file names of the cache.
#[test]
fn timestamps_are_utc_calendar_dates_to_the_microsecond() {
    for (us, text) in KNOWN {
        assert_eq!(cache::rfc3339(*us), *text, "{us} µs");
        let compact: String = text.chars().filter(|c| *c != '-' && *c != ':').collect();
        assert_eq!(cache::file_timestamp(*us), compact, "{us} µs");
    }
}

proptest! {
    #![proptest_config(support::seeded_config(support::cases(256), "props_cache", "timestamps"))]

    /// Timestamped file names sort in time order, which is what "latest" relies on.
    #[test]
    fn timestamps_sort_like_the_instants_they_name(
        a in 0u64..253_402_300_800_000_000,
        b in 0u64..253_402_300_800_000_000,
    ) {
        prop_assert_eq!(cache::rfc3339(a).cmp(&cache::rfc3339(b)), a.cmp(&b));
        prop_assert_eq!(cache::file_timestamp(a).cmp(&cache::file_timestamp(b)), a.cmp(&b));
    }
}
