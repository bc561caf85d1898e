//! Property tests (proptest) for the identifiers that cross the system boundary: channel names and
//! patterns accept exactly what their rules say (so no glob, brace or separator reaches a Redis key), and
//! token hashing is deterministic, fixed-width and never contains the token.

use common::keys::{Keyspace, token_hash};
use common::names::{ChannelName, ChannelPattern, ConnectionId, MAX_CHANNEL_LEN};
use proptest::prelude::*;

fn channel_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A channel name is accepted exactly when it is 1 to 128 of `[A-Za-z0-9_-]`.
    #[test]
    fn channel_names_follow_their_rule(s in any::<String>()) {
        let expected = !s.is_empty() && s.len() <= MAX_CHANNEL_LEN && s.bytes().all(channel_byte);
        prop_assert_eq!(ChannelName::parse(&s).is_ok(), expected);
    }

    /// Valid names round-trip, and a key built from one has exactly one hash tag.
    #[test]
    fn valid_names_make_well_formed_keys(s in "[A-Za-z0-9_-]{1,128}") {
        let name = ChannelName::parse(&s).unwrap();
        prop_assert_eq!(name.as_str(), s.as_str());
        let key = Keyspace::default().channel(name.as_str());
        prop_assert_eq!(key.matches('{').count(), 1);
        prop_assert_eq!(key.matches('}').count(), 1);
    }

    /// Names never carry glob or tag characters, whatever surrounds them.
    #[test]
    fn glob_and_tag_characters_are_refused(
        prefix in "[a-z]{0,10}",
        special in prop::sample::select(vec!['*', '?', '[', ']', '{', '}', ':', ' ', '.', '/', '\\']),
        suffix in "[a-z]{0,10}",
    ) {
        let s = format!("{prefix}{special}{suffix}");
        prop_assert!(ChannelName::parse(&s).is_err());
    }

    /// A pattern is a name, a name with one trailing `*`, or `*`; a prefix pattern matches exactly the
    /// names that start with its stem.
    #[test]
    fn patterns_match_by_prefix(stem in "[a-z0-9-]{1,20}", name in "[a-z0-9-]{1,40}") {
        let pattern = ChannelPattern::parse(&format!("{stem}*")).unwrap();
        let channel = ChannelName::parse(&name).unwrap();
        prop_assert_eq!(pattern.matches(&channel), name.starts_with(&stem));
        let exact = ChannelPattern::parse(&stem).unwrap();
        prop_assert_eq!(exact.matches(&channel), name == stem);
        prop_assert!(ChannelPattern::parse("*").unwrap().matches(&channel));
        let double = format!("{stem}**");
        let leading = format!("*{stem}");
        prop_assert!(ChannelPattern::parse(&double).is_err());
        prop_assert!(ChannelPattern::parse(&leading).is_err());
    }

    /// Connection ids: 1 to 128 of `[A-Za-z0-9_=-]`.
    #[test]
    fn connection_ids_follow_their_rule(s in any::<String>()) {
        let expected = !s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'=' | b'-'));
        prop_assert_eq!(ConnectionId::parse(&s).is_ok(), expected);
    }

    /// Token hashes: 64 lower-case hex characters, deterministic, distinct for distinct tokens, and the
    /// key stores only the hash.
    #[test]
    fn token_hashing(a in "[0-9a-f]{64}", b in "[0-9a-f]{64}") {
        let h = token_hash(&a);
        prop_assert_eq!(h.len(), 64);
        prop_assert!(h.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        prop_assert_eq!(&h, &token_hash(&a));
        prop_assert_eq!(a == b, h == token_hash(&b));
        let key = Keyspace::default().token(&a);
        prop_assert!(!key.contains(&a));
        prop_assert!(key.contains(&h));
    }
}
