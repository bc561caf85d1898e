//! Validated identifiers that cross the system boundary: connection ids from API Gateway, channel names
//! from browsers and the application, and subjects (user ids) from the application's backend.
//!
//! Each is a small newtype that can only be built through `parse`, so a value that reaches Redis or the
//! queue has already been checked. The rules match the Django package's, so existing clients keep working.

use std::fmt;

/// API Gateway's limit on a message (and on `PostToConnection`'s `Data`): 128 KiB.
pub const MAX_PAYLOAD_BYTES: usize = 131_072;

/// Longest connection id accepted (API Gateway's are about 16 characters).
pub const MAX_CONNECTION_ID_LEN: usize = 128;
/// Longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 128;
/// Longest subject (user id) accepted.
pub const MAX_SUBJECT_LEN: usize = 256;

/// Why an identifier was refused. The message is safe to show to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid connection id")]
    ConnectionId,
    #[error("invalid channel name")]
    Channel,
    #[error("invalid subject")]
    Subject,
}

/// An API Gateway connection id: 1 to 128 characters of `[A-Za-z0-9_=-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(String);

impl ConnectionId {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_CONNECTION_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'=' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::ConnectionId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A channel (room) name: 1 to 128 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);

impl ChannelName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_CHANNEL_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Channel)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A subject (the application's user id): 1 to 256 printable ASCII characters other than space, `{` and
/// `}` (braces would change the Redis Cluster hash tag of the user's key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(String);

impl Subject {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_SUBJECT_LEN
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Subject)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A channel pattern from configuration or a token: an exact name, or a prefix ending in `*`
/// (`room-*`), or `*` alone for every channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPattern(String);

impl ChannelPattern {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let stem = s.strip_suffix('*').unwrap_or(s);
        if stem.is_empty() && s == "*" {
            return Ok(Self(s.to_owned()));
        }
        ChannelName::parse(stem)?;
        Ok(Self(s.to_owned()))
    }

    pub fn matches(&self, channel: &ChannelName) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => channel.as_str().starts_with(prefix),
            None => channel.as_str() == self.0,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when any pattern in `patterns` matches `channel`.
    pub fn any_matches(patterns: &[ChannelPattern], channel: &ChannelName) -> bool {
        patterns.iter().any(|p| p.matches(channel))
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids() {
        assert!(ConnectionId::parse("L0SM9cOFvHcCIhw=").is_ok());
        assert!(ConnectionId::parse(&"a".repeat(128)).is_ok());
        for bad in ["", "a b", "a/b", "a+b", "ü", &"a".repeat(129)] {
            assert_eq!(
                ConnectionId::parse(bad),
                Err(NameError::ConnectionId),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn channel_names() {
        assert!(ChannelName::parse("general_2-b").is_ok());
        for bad in ["", "a=b", "a b", "a.b", "{x}", &"c".repeat(129)] {
            assert_eq!(ChannelName::parse(bad), Err(NameError::Channel), "{bad:?}");
        }
    }

    #[test]
    fn subjects() {
        assert!(Subject::parse("user-42@example.com").is_ok());
        for bad in ["", "a b", "{tag}", "tab\t", &"s".repeat(257)] {
            assert_eq!(Subject::parse(bad), Err(NameError::Subject), "{bad:?}");
        }
    }

    #[test]
    fn the_longest_names_are_accepted() {
        let channel = "c".repeat(MAX_CHANNEL_LEN);
        assert_eq!(ChannelName::parse(&channel).unwrap().as_str(), channel);
        let subject = "s".repeat(MAX_SUBJECT_LEN);
        assert_eq!(Subject::parse(&subject).unwrap().as_str(), subject);
        let id = "i".repeat(MAX_CONNECTION_ID_LEN);
        assert_eq!(ConnectionId::parse(&id).unwrap().as_str(), id);
    }

    /// A name shows as exactly what was parsed, in `as_str` and in `Display` (keys and logs use both).
    #[test]
    fn names_show_as_parsed() {
        let id = ConnectionId::parse("L0SM9cOFvHcCIhw=").unwrap();
        assert_eq!(
            (id.as_str(), id.to_string().as_str()),
            ("L0SM9cOFvHcCIhw=", "L0SM9cOFvHcCIhw=")
        );
        let channel = ChannelName::parse("room-7").unwrap();
        assert_eq!(
            (channel.as_str(), channel.to_string().as_str()),
            ("room-7", "room-7")
        );
        let subject = Subject::parse("user-42@example.com").unwrap();
        assert_eq!(subject.as_str(), "user-42@example.com");
        assert_eq!(subject.to_string(), "user-42@example.com");
        assert_eq!(ChannelPattern::parse("room-*").unwrap().as_str(), "room-*");
    }

    #[test]
    fn patterns() {
        let room = ChannelName::parse("room-7").unwrap();
        assert!(ChannelPattern::parse("*").unwrap().matches(&room));
        assert!(ChannelPattern::parse("room-*").unwrap().matches(&room));
        assert!(ChannelPattern::parse("room-7").unwrap().matches(&room));
        assert!(!ChannelPattern::parse("room-77").unwrap().matches(&room));
        assert!(!ChannelPattern::parse("other*").unwrap().matches(&room));
        assert!(ChannelPattern::parse("a b*").is_err());
        assert!(ChannelPattern::parse("**").is_err());
        assert_eq!(ChannelPattern::parse(""), Err(NameError::Channel));
    }

    #[test]
    fn any_pattern_of_a_list_admits_a_channel() {
        let room = ChannelName::parse("room-7").unwrap();
        let patterns = |list: &[&str]| -> Vec<ChannelPattern> {
            list.iter()
                .map(|p| ChannelPattern::parse(p).unwrap())
                .collect()
        };
        assert!(ChannelPattern::any_matches(
            &patterns(&["lobby", "room-*"]),
            &room
        ));
        assert!(!ChannelPattern::any_matches(
            &patterns(&["lobby", "room-8"]),
            &room
        ));
        assert!(!ChannelPattern::any_matches(&[], &room));
    }
}
