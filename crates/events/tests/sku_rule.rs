//! The sku rule has one definition (`is_valid_sku`); the regular expression the API documents
//! publish must accept exactly the same strings.
#![allow(clippy::unwrap_used)]

use eventline_events::{SKU_PATTERN, is_valid_sku};
use proptest::prelude::*;

fn pattern() -> regex::Regex {
    regex::Regex::new(SKU_PATTERN).unwrap()
}

proptest! {
    #[test]
    fn the_pattern_and_the_rule_agree(
        sku in prop_oneof![any::<String>(), "[A-Za-z0-9._ü/ -]{0,70}", "[A-Za-z0-9][A-Za-z0-9._-]{60,66}"]
    ) {
        prop_assert_eq!(pattern().is_match(&sku), is_valid_sku(&sku), "{:?}", sku);
    }
}

#[test]
fn the_edges_agree() {
    for sku in ["a", "A.b_c-1", &"A".repeat(64), &"A".repeat(65), "", "-a", ".a", "a b", "a\n", "ü"] {
        assert_eq!(pattern().is_match(sku), is_valid_sku(sku), "{sku:?}");
    }
}
