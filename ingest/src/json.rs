//! JSON limits that serde does not give: how deeply a document nests. Checked on the raw bytes before
//! anything parses them, in one pass without allocating, so a body nested 60,000 deep is refused
//! cheaply instead of being parsed, stored or sent on.

/// The deepest nesting of arrays and objects accepted anywhere (a client frame, a published payload, a
/// token request, a webhook's reply).
pub const MAX_DEPTH: usize = 64;

/// True when no array or object in `bytes` is nested deeper than `max`. Brackets inside strings (with
/// their escapes) do not count. The bytes need not be valid JSON: this only bounds nesting, and the
/// parser that runs afterwards judges the rest.
pub fn depth_within(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        format!("{}{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn counts_arrays_and_objects_outside_strings() {
        assert!(depth_within(nested(64).as_bytes(), 64));
        assert!(!depth_within(nested(65).as_bytes(), 64));
        assert!(!depth_within(nested(60_000).as_bytes(), 64));
        assert!(depth_within(br#"{"a":{"b":[1,{"c":2}]}}"#, 4));
        assert!(!depth_within(br#"{"a":{"b":[1,{"c":2}]}}"#, 3));
        // Brackets in strings, escaped quotes included, do not count.
        assert!(depth_within(br#"{"a":"[[[[\"{{{{"}"#, 1));
        // Siblings do not add up.
        assert!(depth_within(br#"[[1],[2],[3],{"a":[]}]"#, 3));
        assert!(!depth_within(br#"[[1],[2],[3],{"a":[]}]"#, 2));
    }
}
