//! The metric names a PromQL expression reads, found without a full parser: quoted strings, label matchers
//! (`{...}`), ranges (`[...]`), grouping lists (`by (...)`, `on (...)`, ...), Grafana variables (`$x`),
//! numbers, keywords and function calls are skipped; every other identifier is a metric (or a recording
//! rule) name.

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// Aggregation operators, which may be followed by `by (...)` or `without (...)` before their parentheses.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Metric and recording-rule names read by `expr`, in order of appearance, without repeats.
pub fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_quoted(&chars, i),
            '{' => i = skip_until(&chars, i, '}'),
            '[' => i = skip_until(&chars, i, ']'),
            '$' => {
                i += 1;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number, possibly with an exponent or a duration unit (5m, 1e3).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let rest: String = chars[next..].iter().collect();
                let aggregates = AGGREGATIONS.contains(&word.as_str())
                    && (rest.starts_with("by") || rest.starts_with("without"));
                let calls = aggregates || (next < chars.len() && chars[next] == '(');
                if GROUPING.contains(&word.as_str()) {
                    if calls {
                        i = skip_until(&chars, next, ')');
                    }
                } else if !calls
                    && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
                    && !names.contains(&word)
                {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The exported family a series name belongs to: histogram series drop `_bucket`, `_sum` and `_count`.
pub fn family(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base;
        }
    }
    name
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn skip_quoted(chars: &[char], at: usize) -> usize {
    let quote = chars[at];
    let mut i = at + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

fn skip_until(chars: &[char], at: usize, close: char) -> usize {
    let mut i = at + 1;
    while i < chars.len() && chars[i] != close {
        if matches!(chars[i], '"' | '\'' | '`') {
            i = skip_quoted(chars, i);
            continue;
        }
        i += 1;
    }
    i + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(expr: &str, expected: &[&str]) {
        assert_eq!(metric_names(expr), expected, "{expr}");
    }

    #[test]
    fn finds_metrics_and_skips_everything_else() {
        check(
            "sum by (route, outcome) (rate(fanout_callbacks_total{route=\"connect\",x=~\"a|b\"}[5m]))",
            &["fanout_callbacks_total"],
        );
        check(
            "histogram_quantile(0.99, sum by (le) (rate(fanout_end_to_end_seconds_bucket[$__rate_interval])))",
            &["fanout_end_to_end_seconds_bucket"],
        );
        check(
            "fanout:throttle_share:ratio5m > 0.05 and on () sum(fanout:management_calls:rate5m) > 1",
            &[
                "fanout:throttle_share:ratio5m",
                "fanout:management_calls:rate5m",
            ],
        );
        check(
            "sum(up{job=\"fanout-ingest\"}) == 0 or absent(up{job=\"x\"})",
            &["up"],
        );
        check("vector($account_budget) * 1e3", &[]);
        check(
            "max without (instance) (x) + count(y) + sum_of_things",
            &["x", "y", "sum_of_things"],
        );
        check(
            "a / ignoring(instance) group_left(pod) b offset 5m",
            &["a", "b"],
        );
    }

    #[test]
    fn histogram_series_belong_to_their_family() {
        assert_eq!(
            family("fanout_callback_duration_seconds_bucket"),
            "fanout_callback_duration_seconds"
        );
        assert_eq!(
            family("fanout_delivery_duration_seconds_count"),
            "fanout_delivery_duration_seconds"
        );
        assert_eq!(family("fanout_callbacks_total"), "fanout_callbacks_total");
    }
}
