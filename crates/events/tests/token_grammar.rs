//! The consistency token's parser and the pattern the query API publishes accept exactly the same
//! strings (a client or fuzzer that follows the pattern is never refused, and nothing the pattern
//! excludes is taken).
#![allow(clippy::unwrap_used)]

use eventline_events::{CONSISTENCY_TOKEN_PATTERN, ConsistencyToken};
use proptest::prelude::*;

fn pattern() -> regex::Regex {
    regex::Regex::new(CONSISTENCY_TOKEN_PATTERN).unwrap()
}

/// Strings near the grammar: pairs of digit runs of any length, separators, signs and spaces.
fn near_tokens() -> impl Strategy<Value = String> {
    let number = prop_oneof!["[0-9]{1,20}", "[+-]?[0-9]{0,3}", Just(String::new()), " ?[0-9]{1,3} ?"];
    let pair = (number.clone(), prop_oneof![Just(":"), Just(""), Just("::")], number)
        .prop_map(|(p, sep, o)| format!("{p}{sep}{o}"));
    prop::collection::vec(pair, 1..6).prop_map(|pairs| pairs.join(","))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn the_pattern_and_the_parser_agree(token in prop_oneof![near_tokens(), any::<String>()]) {
        prop_assert_eq!(pattern().is_match(&token), token.parse::<ConsistencyToken>().is_ok(), "{:?}", token);
    }
}

#[test]
fn they_agree_at_the_edges() {
    let pairs = |n: usize| (0..n).map(|i| format!("{i}:1")).collect::<Vec<_>>().join(",");
    for token in [
        "0:0".to_owned(),
        "999999999:999999999999999999".to_owned(),
        "1000000000:1".to_owned(),
        "1:1000000000000000000".to_owned(),
        "0000000001:1".to_owned(),
        pairs(1024),
        pairs(1025),
        "0:1,0:2".to_owned(),
    ] {
        assert_eq!(
            pattern().is_match(&token),
            token.parse::<ConsistencyToken>().is_ok(),
            "{}",
            &token[..token.len().min(40)]
        );
    }
    assert!(
        pairs(1024).parse::<ConsistencyToken>().is_ok() && pairs(1025).parse::<ConsistencyToken>().is_err()
    );
}
