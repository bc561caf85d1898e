//! Prometheus rules, scrape configurations and the Grafana dashboard against the code: every metric they
//! read is one the services export (`common::metrics::names`), every alert has its annotations, a runbook
//! section in deploy/README.md and a promtool unit test, the `job` names agree everywhere, and the dashboard
//! file is what `deploy_check::dashboard` generates.

use deploy_check::dashboard;
use deploy_check::promql::{family, metric_names};
use deploy_check::repo::{self, get, get_str};
use serde_yaml::Value;
use std::collections::BTreeSet;

const RULE_FILES: &[&str] = &[
    "deploy/prometheus/rules/recording.yml",
    "deploy/prometheus/rules/alerts.yml",
];

fn rules() -> Vec<Value> {
    RULE_FILES
        .iter()
        .flat_map(|f| {
            get(&repo::yaml(f), "groups")
                .and_then(Value::as_sequence)
                .unwrap()
                .iter()
                .flat_map(|g| {
                    get(g, "rules")
                        .and_then(Value::as_sequence)
                        .unwrap()
                        .clone()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn alerts() -> Vec<Value> {
    rules()
        .into_iter()
        .filter(|r| get(r, "alert").is_some())
        .collect()
}

fn dashboard_exprs() -> Vec<String> {
    dashboard::rows()
        .into_iter()
        .flat_map(|r| r.panels)
        .flat_map(|p| p.queries)
        .map(|q| q.expr)
        .collect()
}

/// Where a name may come from besides `common::metrics::names`: Prometheus's own `up`, and our recording rules.
fn allowed_extra() -> BTreeSet<String> {
    let mut extra: BTreeSet<String> = rules()
        .iter()
        .filter_map(|r| get(r, "record").map(|v| v.as_str().unwrap().to_owned()))
        .collect();
    extra.insert("up".to_owned());
    extra
}

#[test]
fn rules_and_dashboard_read_only_metrics_the_services_export() {
    let extra = allowed_extra();
    let mut exprs: Vec<(String, String)> = rules()
        .iter()
        .map(|r| {
            let name = get(r, "alert")
                .or_else(|| get(r, "record"))
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned();
            (name, get_str(r, "expr").to_owned())
        })
        .collect();
    exprs.extend(
        dashboard_exprs()
            .into_iter()
            .map(|e| ("dashboard".to_owned(), e)),
    );
    let mut read_any_fanout = 0;
    for (owner, expr) in &exprs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty() || expr.starts_with("vector("),
            "{owner}: {expr} reads no metric"
        );
        for name in names {
            let known =
                common::metrics::names::ALL.contains(&family(&name)) || extra.contains(&name);
            assert!(
                known,
                "{owner} reads {name}, which is neither in common::metrics::names nor a recording rule: {expr}"
            );
            read_any_fanout += usize::from(name.starts_with("fanout_"));
        }
    }
    assert!(
        read_any_fanout > 20,
        "the rules and dashboard should read the exported metrics directly"
    );
}

#[test]
fn recording_rules_are_named_level_metric_operation() {
    for r in rules() {
        if let Some(name) = get(&r, "record") {
            let name = name.as_str().unwrap();
            assert_eq!(
                name.split(':').count(),
                3,
                "{name} should be level:metric:operation"
            );
            assert!(name.starts_with("fanout:"), "{name}");
        }
    }
}

/// GitHub's anchor for a Markdown heading: lower case, spaces to dashes, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn readme() -> String {
    repo::read("deploy/README.md")
}

#[test]
fn every_alert_has_annotations_a_runbook_section_and_a_unit_test() {
    let readme = readme();
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let tests = repo::read("deploy/prometheus/tests/alerts_test.yml");
    let alerts = alerts();
    assert!(alerts.len() >= 9);
    let mut bases = BTreeSet::new();
    for a in &alerts {
        let name = get_str(a, "alert");
        let annotations =
            get(a, "annotations").unwrap_or_else(|| panic!("{name} has no annotations"));
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                get_str(annotations, key).len() > 10,
                "{name}: {key} missing or too short"
            );
        }
        assert!(
            get_str(annotations, "description")
                .split_whitespace()
                .count()
                > 15,
            "{name}: say what to do"
        );
        let severity = get_str(get(a, "labels").expect("labels"), "severity");
        assert!(
            matches!(severity, "warning" | "critical"),
            "{name}: severity {severity}"
        );
        let url = get_str(annotations, "runbook_url");
        let (base, fragment) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: runbook_url needs #anchor"));
        bases.insert(base.to_owned());
        assert_eq!(fragment, name.to_lowercase(), "{name}: runbook anchor");
        assert!(
            anchors.contains(fragment),
            "{name}: deploy/README.md has no heading for #{fragment}"
        );
        assert!(base.ends_with("/deploy/README.md"), "{name}: {base}");
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{name} has no promtool test"
        );
    }
    assert_eq!(
        bases.len(),
        1,
        "all runbook links share one base: {bases:?}"
    );
}

/// The metric families an expression reads, with recording rules replaced by what they read.
fn families_read(expr: &str) -> BTreeSet<String> {
    let recording: Vec<(String, String)> = rules()
        .iter()
        .filter_map(|r| {
            get(r, "record").map(|n| {
                (
                    n.as_str().unwrap().to_owned(),
                    get_str(r, "expr").to_owned(),
                )
            })
        })
        .collect();
    let mut out = BTreeSet::new();
    for name in metric_names(expr) {
        match recording.iter().find(|(n, _)| *n == name) {
            Some((_, inner)) => out.extend(families_read(inner)),
            None => {
                out.insert(family(&name).to_owned());
            }
        }
    }
    out
}

#[test]
fn every_alert_has_a_dashboard_panel_that_shows_its_signal() {
    let panels: Vec<dashboard::Panel> = dashboard::rows()
        .into_iter()
        .flat_map(|r| r.panels)
        .collect();
    let alerts = alerts();
    for a in &alerts {
        let name = get_str(a, "alert");
        let title = dashboard::ALERT_PANELS
            .iter()
            .find(|(alert, _)| *alert == name)
            .unwrap_or_else(|| panic!("{name} has no panel in dashboard::ALERT_PANELS"))
            .1;
        let panel = panels
            .iter()
            .find(|p| p.title == title)
            .unwrap_or_else(|| panic!("{name}: the dashboard has no panel {title:?}"));
        let alert_reads = families_read(get_str(a, "expr"));
        let panel_reads: BTreeSet<String> = panel
            .queries
            .iter()
            .flat_map(|q| families_read(&q.expr))
            .collect();
        assert!(
            !alert_reads.is_disjoint(&panel_reads),
            "{name}: panel {title:?} reads {panel_reads:?}, the alert reads {alert_reads:?}"
        );
    }
    assert_eq!(
        dashboard::ALERT_PANELS.len(),
        alerts.len(),
        "ALERT_PANELS lists an alert that no longer exists"
    );
}

fn scrape_jobs() -> BTreeSet<String> {
    get(
        &repo::yaml("deploy/prometheus/prometheus.yml"),
        "scrape_configs",
    )
    .and_then(Value::as_sequence)
    .unwrap()
    .iter()
    .map(|c| get_str(c, "job_name").to_owned())
    .collect()
}

fn podmonitor_jobs() -> BTreeSet<String> {
    repo::yaml_docs("deploy/k8s/monitoring/podmonitors.yaml")
        .iter()
        .flat_map(|pm| {
            get(get(pm, "spec").unwrap(), "podMetricsEndpoints")
                .and_then(Value::as_sequence)
                .unwrap()
                .clone()
        })
        .flat_map(|ep| {
            get(&ep, "relabelings")
                .and_then(Value::as_sequence)
                .unwrap()
                .clone()
        })
        .filter(|r| get(r, "targetLabel").and_then(Value::as_str) == Some("job"))
        .map(|r| get_str(&r, "replacement").to_owned())
        .collect()
}

#[test]
fn job_names_agree_between_scrapes_rules_and_dashboard() {
    let jobs = scrape_jobs();
    assert_eq!(
        jobs,
        BTreeSet::from([
            "fanout-ingest".into(),
            "fanout-worker".into(),
            "fanout-emulator".into()
        ])
    );
    assert_eq!(
        podmonitor_jobs(),
        jobs,
        "PodMonitors set the same job labels as prometheus.yml"
    );
    let mut exprs: Vec<String> = rules()
        .iter()
        .map(|r| get_str(r, "expr").to_owned())
        .collect();
    exprs.extend(dashboard_exprs());
    for expr in exprs {
        for part in expr.split("job=\"").skip(1) {
            let job = part.split('"').next().unwrap();
            assert!(
                jobs.contains(job),
                "{expr} names job {job}, which nothing scrapes"
            );
        }
        for part in expr.split("job=~\"").skip(1) {
            let pattern = part.split('"').next().unwrap();
            for alternative in pattern.split('|') {
                let literal = alternative.trim_end_matches(".*");
                assert!(
                    jobs.iter().any(|j| j.starts_with(literal)),
                    "{expr}: {alternative} matches no job"
                );
            }
        }
    }
    // Compose runs the scraped services under the names prometheus.yml targets.
    let compose = repo::yaml("deploy/docker-compose.yml");
    let services = get(&compose, "services")
        .and_then(Value::as_mapping)
        .unwrap();
    let targets: Vec<String> = get(
        &repo::yaml("deploy/prometheus/prometheus.yml"),
        "scrape_configs",
    )
    .and_then(Value::as_sequence)
    .unwrap()
    .iter()
    .flat_map(|c| {
        get(c, "static_configs")
            .and_then(Value::as_sequence)
            .unwrap()
            .clone()
    })
    .flat_map(|s| {
        get(&s, "targets")
            .and_then(Value::as_sequence)
            .unwrap()
            .clone()
    })
    .map(|t| t.as_str().unwrap().to_owned())
    .collect();
    for target in targets {
        let host = target.split(':').next().unwrap();
        assert!(
            services.contains_key(Value::String(host.to_owned())),
            "compose has no service {host}"
        );
    }
}

#[test]
fn the_dashboard_file_is_generated_from_the_code() {
    let path = repo::root().join(dashboard::PATH);
    let expected = dashboard::file_contents();
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    if actual != expected {
        std::fs::write(&path, &expected).unwrap();
        panic!(
            "{} was not up to date; it has been regenerated: review and commit it",
            dashboard::PATH
        );
    }
}

#[test]
fn the_dashboard_has_the_rows_the_issue_lists_and_a_datasource_variable() {
    let d = dashboard::render();
    let variables = d["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus")
    );
    let rows: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(rows, ["Gateway callbacks", "Queue", "Worker", "Redis"]);
    let exprs = dashboard_exprs().join("\n");
    use common::metrics::names;
    for wanted in [
        names::CALLBACKS_TOTAL,
        names::CALLBACK_DURATION_SECONDS,
        names::TOKENS_REFUSED_TOTAL,
        names::LIVE_CONNECTIONS,
        names::QUEUE_DEPTH,
        names::JOBS_DEAD_LETTERED_TOTAL,
        names::DELIVERIES_TOTAL,
        names::THROTTLES_TOTAL,
        names::SEND_RATE,
        names::END_TO_END_SECONDS,
        names::DELIVERIES_IN_FLIGHT,
        names::REDIS_ERRORS_TOTAL,
    ] {
        assert!(exprs.contains(wanted), "the dashboard shows no {wanted}");
    }
}

#[test]
fn the_readme_describes_every_panel() {
    let readme = readme();
    for row in dashboard::rows() {
        for panel in row.panels {
            assert!(
                readme.contains(&format!("**{}**", panel.title)),
                "deploy/README.md does not describe the panel {:?} (write it in bold)",
                panel.title
            );
        }
    }
}

#[test]
fn grafana_provisioning_loads_the_generated_dashboard() {
    let provider = repo::yaml("deploy/grafana/provisioning/dashboards/fanout.yml");
    let path = get_str(
        get(
            &get(&provider, "providers")
                .and_then(Value::as_sequence)
                .unwrap()[0],
            "options",
        )
        .unwrap(),
        "path",
    );
    let compose = repo::read("deploy/docker-compose.yml");
    assert!(
        compose.contains(&format!("./grafana/dashboards:{path}:ro")),
        "compose mounts the dashboards at {path}"
    );
    let file = std::path::Path::new(dashboard::PATH);
    assert_eq!(
        file.parent().unwrap(),
        std::path::Path::new("deploy/grafana/dashboards")
    );
}
