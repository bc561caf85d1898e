//! Long because every check reads the same rendered manifests; one module keeps their loading in one place.
//!
//! The Kubernetes manifests (`deploy/k8s`) against the code: the KEDA Redis Streams scaler watches the
//! stream and consumer group the queue uses (`common::keys`, `common::queue::streams::GROUP`), the SQS scaler
//! watches the configured queue, configuration names only settings the binaries read, each service gets only
//! its own secrets, containers listen where their probes and Services look, every workload is locked down,
//! network policies admit and let out only what the services need, the IRSA policies grant what the ECS task
//! roles grant, and kustomizations name files that exist.

use deploy_check::repo::{self, get, get_str};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn docs(file: &str) -> Vec<Value> {
    repo::yaml_docs(&format!("deploy/k8s/{file}"))
}

fn kind_named(file: &str, kind: &str, name: &str) -> Value {
    docs(file)
        .into_iter()
        .find(|d| {
            get_str(d, "kind") == kind && get_str(get(d, "metadata").unwrap(), "name") == name
        })
        .unwrap_or_else(|| panic!("{file} has no {kind} {name}"))
}

fn config_data() -> BTreeMap<String, String> {
    let cm = kind_named("base/configmap.yaml", "ConfigMap", "fanout-config");
    get(&cm, "data")
        .and_then(Value::as_mapping)
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `KEY=value` lines of an env file.
fn env_file(file: &str) -> BTreeMap<String, String> {
    repo::read(&format!("deploy/k8s/{file}"))
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// The JSON-patch `value`s an overlay's kustomization sets on the ConfigMap, by key.
fn overlay_config(overlay: &str) -> BTreeMap<String, String> {
    let k = repo::yaml(&format!("deploy/k8s/overlays/{overlay}/kustomization.yaml"));
    let mut out = BTreeMap::new();
    for patch in get(&k, "patches")
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default()
    {
        if get_str(get(&patch, "target").unwrap(), "kind") != "ConfigMap" {
            continue;
        }
        let ops: Value = serde_yaml::from_str(get_str(&patch, "patch")).unwrap();
        for op in ops.as_sequence().unwrap() {
            if let (Some(path), Some(value)) = (get(op, "path"), get(op, "value")) {
                let key = path
                    .as_str()
                    .unwrap()
                    .trim_start_matches("/data/")
                    .to_owned();
                out.insert(key, value.as_str().unwrap().to_owned());
            }
        }
    }
    out
}

fn trigger(file: &str) -> Value {
    let so = kind_named(file, "ScaledObject", "fanout-worker");
    get(get(&so, "spec").unwrap(), "triggers")
        .and_then(Value::as_sequence)
        .unwrap()[0]
        .clone()
}

#[test]
fn the_redis_streams_scaler_watches_the_workers_stream_and_group() {
    let t = trigger("overlays/redis-streams/keda-redis-streams.yaml");
    assert_eq!(get_str(&t, "type"), "redis-streams");
    let meta = get(&t, "metadata").unwrap();
    let prefix = config_data()["FANOUT_KEY_PREFIX"].clone();
    let queue_url =
        env_file("overlays/redis-streams/ingest.env.example")["FANOUT_QUEUE_URL"].clone();
    assert_eq!(
        env_file("overlays/redis-streams/worker.env.example")["FANOUT_QUEUE_URL"],
        queue_url,
        "ingest and the worker use the same queue"
    );
    let queue = queue_url
        .split("queue=")
        .nth(1)
        .expect("a ?queue= name")
        .split('&')
        .next()
        .unwrap();
    let keys = common::keys::Keyspace::new(prefix).queue(queue);
    assert_eq!(get_str(meta, "stream"), keys.stream);
    assert_eq!(
        get_str(meta, "consumerGroup"),
        common::queue::streams::GROUP
    );
    let target: u64 = get_str(meta, "pendingEntriesCount").parse().unwrap();
    let in_hand: u64 = config_data()["FANOUT_MAX_JOBS_IN_HAND"].parse().unwrap();
    assert!(
        target < in_hand,
        "pendingEntriesCount {target} must stay below FANOUT_MAX_JOBS_IN_HAND {in_hand}: a worker never holds more"
    );
    let address = get_str(meta, "address");
    assert!(
        queue_url.contains(&format!("@{address}/")),
        "KEDA reads the Redis the queue URL names: {address} vs {queue_url}"
    );
    // The bulk lane's stream, the default FANOUT_BULK_QUEUE_URL's.
    let so = kind_named(
        "overlays/redis-streams/keda-redis-streams.yaml",
        "ScaledObject",
        "fanout-worker",
    );
    let bulk = get(get(&so, "spec").unwrap(), "triggers")
        .and_then(Value::as_sequence)
        .unwrap()[1]
        .clone();
    let bulk_url = common::queue::lanes::bulk_url(&queue_url).unwrap();
    let bulk_queue = bulk_url.split("queue=").nth(1).unwrap();
    assert_eq!(
        get_str(get(&bulk, "metadata").unwrap(), "stream"),
        common::keys::Keyspace::new(config_data()["FANOUT_KEY_PREFIX"].clone())
            .queue(bulk_queue)
            .stream
    );
}

#[test]
fn the_sqs_scaler_watches_the_configured_queue() {
    let t = trigger("overlays/aws-sqs/keda-sqs.yaml");
    assert_eq!(get_str(&t, "type"), "aws-sqs-queue");
    let meta = get(&t, "metadata").unwrap();
    let config = overlay_config("aws-sqs");
    let url = get_str(meta, "queueURL");
    assert_eq!(url, config["FANOUT_QUEUE_URL"]);
    let region = get_str(meta, "awsRegion");
    assert!(
        url.starts_with(&format!("https://sqs.{region}.amazonaws.com/")),
        "{url} is not in {region}"
    );
    assert!(get_str(meta, "queueLength").parse::<u64>().unwrap() >= 1);
    let auth = get_str(get(&t, "authenticationRef").unwrap(), "name");
    kind_named(
        "overlays/aws-sqs/keda-sqs.yaml",
        "TriggerAuthentication",
        auth,
    );
}

#[test]
fn configuration_names_only_settings_the_binaries_read() {
    let mut known = repo::env_settings("ingest/src/config.rs");
    known.extend(repo::env_settings("fanout-worker/src/config.rs"));
    known.extend(repo::env_settings("local-gateway/src/config.rs"));
    let mut names: Vec<(String, String)> = config_data()
        .into_keys()
        .map(|k| ("base ConfigMap".into(), k))
        .collect();
    for overlay in ["aws-sqs", "redis-streams", "local"] {
        names.extend(
            overlay_config(overlay)
                .into_keys()
                .map(|k| (overlay.to_owned(), k)),
        );
    }
    for file in SECRET_FILES {
        names.extend(env_file(file).into_keys().map(|k| ((*file).to_owned(), k)));
    }
    for (source, name) in names {
        assert!(
            known.contains(&name),
            "{source} sets {name}, which no binary reads"
        );
    }
}

/// Every env file an overlay turns into a Secret (the committed examples).
const SECRET_FILES: &[&str] = &[
    "overlays/aws-sqs/ingest.env.example",
    "overlays/aws-sqs/worker.env.example",
    "overlays/redis-streams/ingest.env.example",
    "overlays/redis-streams/worker.env.example",
    "overlays/local/ingest.env.example",
    "overlays/local/worker.env.example",
    "overlays/local/local-gateway.env.example",
];

fn env_from_secrets(file: &str, name: &str) -> Vec<String> {
    let d = kind_named(file, "Deployment", name);
    containers(&d)
        .iter()
        .flat_map(|c| {
            get(c, "envFrom")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|e| get(&e, "secretRef").map(|r| get_str(r, "name").to_owned()))
        .collect()
}

#[test]
fn each_service_gets_only_its_own_secrets() {
    assert_eq!(
        env_from_secrets("base/ingest.yaml", "fanout-ingest"),
        ["fanout-ingest-secrets"]
    );
    assert_eq!(
        env_from_secrets("base/worker.yaml", "fanout-worker"),
        ["fanout-worker-secrets"]
    );
    let worker_reads = repo::env_settings("fanout-worker/src/config.rs");
    for overlay in ["aws-sqs", "redis-streams", "local"] {
        let k = repo::yaml(&format!("deploy/k8s/overlays/{overlay}/kustomization.yaml"));
        let generated: Vec<(String, Vec<String>)> = get(&k, "secretGenerator")
            .and_then(Value::as_sequence)
            .unwrap()
            .iter()
            .map(|g| {
                let envs = get(g, "envs")
                    .and_then(Value::as_sequence)
                    .unwrap()
                    .iter()
                    .map(|e| e.as_str().unwrap().to_owned())
                    .collect();
                (get_str(g, "name").to_owned(), envs)
            })
            .collect();
        let worker_env = &generated
            .iter()
            .find(|(n, _)| n == "fanout-worker-secrets")
            .unwrap_or_else(|| panic!("{overlay} generates no fanout-worker-secrets"))
            .1;
        let ingest_env = &generated
            .iter()
            .find(|(n, _)| n == "fanout-ingest-secrets")
            .unwrap_or_else(|| panic!("{overlay} generates no fanout-ingest-secrets"))
            .1;
        for file in worker_env {
            let values = env_file(&format!("overlays/{overlay}/{file}.example"));
            assert!(values.contains_key("FANOUT_REDIS_URL"), "{overlay}/{file}");
            for key in values.keys() {
                assert!(
                    worker_reads.contains(key),
                    "{overlay}/{file}: the worker does not read {key}"
                );
                assert!(
                    !matches!(key.as_str(), "FANOUT_GATEWAY_SECRETS" | "FANOUT_API_KEYS"),
                    "{overlay}/{file}: the worker must not receive {key}"
                );
            }
        }
        for file in ingest_env {
            let values = env_file(&format!("overlays/{overlay}/{file}.example"));
            for key in [
                "FANOUT_REDIS_URL",
                "FANOUT_GATEWAY_SECRETS",
                "FANOUT_API_KEYS",
            ] {
                assert!(values.contains_key(key), "{overlay}/{file} lacks {key}");
            }
        }
    }
    // No committed file carries a usable secret: only examples, whose values are placeholders.
    for file in SECRET_FILES {
        for (key, value) in env_file(file) {
            if matches!(
                key.as_str(),
                "FANOUT_GATEWAY_SECRETS" | "FANOUT_API_KEYS" | "EMULATOR_GATEWAY_SECRET"
            ) {
                assert!(
                    value.starts_with("REPLACE_"),
                    "{file}: {key} is a real value"
                );
            }
        }
    }
    let ignored = repo::read("deploy/.gitignore");
    assert!(ignored.contains("k8s/overlays/*/*.env"));
}

fn network_policies() -> Vec<Value> {
    let mut all = docs("base/networkpolicy.yaml");
    all.extend(docs("overlays/local/networkpolicy.yaml"));
    all.extend(docs("overlays/local/redis.yaml"));
    all.extend(docs("overlays/local/local-gateway.yaml"));
    all.into_iter()
        .filter(|d| get_str(d, "kind") == "NetworkPolicy")
        .collect()
}

fn spec(d: &Value) -> &Value {
    get(d, "spec").unwrap()
}

fn seq(v: &Value, key: &str) -> Vec<Value> {
    get(v, key)
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn network_policies_admit_and_let_out_only_what_the_services_need() {
    let base = docs("base/networkpolicy.yaml");
    let deny = base
        .iter()
        .find(|d| get_str(get(d, "metadata").unwrap(), "name") == "default-deny")
        .expect("a default-deny policy");
    assert!(
        get(spec(deny), "podSelector")
            .unwrap()
            .as_mapping()
            .unwrap()
            .is_empty()
    );
    let types: Vec<Value> = seq(spec(deny), "policyTypes");
    assert_eq!(
        types,
        [Value::from("Ingress"), Value::from("Egress")],
        "deny both directions by default"
    );
    for policy in network_policies() {
        let name = get_str(get(&policy, "metadata").unwrap(), "name").to_owned();
        for rule in seq(spec(&policy), "egress") {
            assert!(
                !seq(&rule, "ports").is_empty(),
                "{name}: an egress rule without ports lets out everything"
            );
        }
        for rule in seq(spec(&policy), "ingress") {
            assert!(
                !seq(&rule, "ports").is_empty(),
                "{name}: ingress on every port"
            );
        }
    }
    // Ingest: the Ingress controller and monitoring only, never "any namespace".
    let ingest = base
        .iter()
        .find(|d| get_str(get(d, "metadata").unwrap(), "name") == "fanout-ingest")
        .unwrap();
    let rules = seq(spec(ingest), "ingress");
    assert_eq!(rules.len(), 1);
    let from: Vec<String> = seq(&rules[0], "from")
        .iter()
        .map(|f| {
            get_str(
                get(
                    get(f, "namespaceSelector").expect("from a namespace"),
                    "matchLabels",
                )
                .unwrap(),
                "kubernetes.io/metadata.name",
            )
            .to_owned()
        })
        .collect();
    assert_eq!(from, ["ingress-nginx", "monitoring"]);
    // Egress of both services: Redis, HTTPS (SQS, STS, the Management API, the webhook), and DNS.
    for service in ["fanout-ingest", "fanout-worker"] {
        let p = base
            .iter()
            .find(|d| get_str(get(d, "metadata").unwrap(), "name") == service)
            .unwrap();
        let ports: Vec<u64> = seq(spec(p), "egress")
            .iter()
            .flat_map(|r| seq(r, "ports"))
            .map(|p| get(&p, "port").and_then(Value::as_u64).unwrap())
            .collect();
        assert_eq!(ports, [6379, 443], "{service}");
    }
    let dns = base
        .iter()
        .find(|d| get_str(get(d, "metadata").unwrap(), "name") == "dns")
        .expect("a DNS egress policy");
    let ports: Vec<u64> = seq(spec(dns), "egress")
        .iter()
        .flat_map(|r| seq(r, "ports"))
        .map(|p| get(&p, "port").and_then(Value::as_u64).unwrap())
        .collect();
    assert_eq!(ports, [53, 53]);
}

/// The actions of each statement of an IAM policy document, by `Sid`.
fn actions_by_sid(statements: &[serde_json::Value]) -> BTreeMap<String, Vec<String>> {
    statements
        .iter()
        .map(|s| {
            let actions = match &s["Action"] {
                serde_json::Value::String(a) => vec![a.clone()],
                serde_json::Value::Array(a) => {
                    a.iter().map(|a| a.as_str().unwrap().to_owned()).collect()
                }
                other => panic!("Action {other}"),
            };
            (
                s["Sid"]
                    .as_str()
                    .expect("every statement has a Sid")
                    .to_owned(),
                actions,
            )
        })
        .collect()
}

#[test]
fn irsa_policies_grant_what_the_ecs_task_roles_grant() {
    let template = repo::yaml("deploy/aws/fanout.yaml");
    for (role, file) in [
        ("IngestTaskRole", "ingest-policy.json"),
        ("WorkerTaskRole", "worker-policy.json"),
    ] {
        let resource = get(get(&template, "Resources").unwrap(), role).unwrap();
        let mut ecs = Vec::new();
        for policy in seq(get(resource, "Properties").unwrap(), "Policies") {
            for statement in seq(get(&policy, "PolicyDocument").unwrap(), "Statement") {
                // The ECS collector's metrics permission has no counterpart on EKS (the cluster's own
                // Prometheus scrapes the pods).
                let json = serde_json::to_value(&statement).unwrap();
                if json["Sid"] != "CollectorWritesMetrics" {
                    ecs.push(json);
                }
            }
        }
        let irsa: serde_json::Value = serde_json::from_str(&repo::read(&format!(
            "deploy/k8s/overlays/aws-sqs/iam/{file}"
        )))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            actions_by_sid(irsa["Statement"].as_array().unwrap()),
            actions_by_sid(&ecs),
            "{file} grants what {role} grants"
        );
        for statement in irsa["Statement"].as_array().unwrap() {
            let resources = match &statement["Resource"] {
                serde_json::Value::String(r) => vec![r.clone()],
                serde_json::Value::Array(r) => {
                    r.iter().map(|r| r.as_str().unwrap().to_owned()).collect()
                }
                other => panic!("Resource {other}"),
            };
            assert!(
                !resources.iter().any(|r| r == "*"),
                "{file}: no wildcard resource"
            );
        }
    }
}

#[test]
fn ingest_leaves_the_load_balancer_before_it_stops_and_the_worker_is_probed_on_healthz() {
    let ingest = kind_named("base/ingest.yaml", "Deployment", "fanout-ingest");
    let c = containers(&ingest)[0].clone();
    let sleep = get(
        get(
            get(get(&c, "lifecycle").unwrap(), "preStop").unwrap(),
            "sleep",
        )
        .unwrap(),
        "seconds",
    )
    .and_then(Value::as_u64)
    .expect("a preStop sleep (the image has no shell)");
    let grace = get(pod_spec(&ingest), "terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
        .unwrap();
    assert!(
        sleep >= 5 && sleep + 10 <= grace,
        "preStop {sleep} s within a {grace} s grace period"
    );
    let worker = containers(&kind_named(
        "base/worker.yaml",
        "Deployment",
        "fanout-worker",
    ))[0]
        .clone();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(
            probe_path(&worker, probe),
            "/healthz",
            "the worker's {probe}"
        );
    }
}

fn deployments() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for file in [
        "base/ingest.yaml",
        "base/worker.yaml",
        "overlays/local/redis.yaml",
        "overlays/local/local-gateway.yaml",
    ] {
        for d in docs(file) {
            if get_str(&d, "kind") == "Deployment" {
                out.push((file.to_owned(), d));
            }
        }
    }
    out
}

fn pod_spec(d: &Value) -> &Value {
    get(get(get(d, "spec").unwrap(), "template").unwrap(), "spec").unwrap()
}

fn containers(d: &Value) -> Vec<Value> {
    get(pod_spec(d), "containers")
        .and_then(Value::as_sequence)
        .unwrap()
        .clone()
}

#[test]
fn every_workload_runs_locked_down_with_resources() {
    let all = deployments();
    assert_eq!(all.len(), 4);
    for (file, d) in all {
        let pod = get(pod_spec(&d), "securityContext")
            .unwrap_or_else(|| panic!("{file}: pod securityContext"));
        assert_eq!(
            get(pod, "runAsNonRoot").and_then(Value::as_bool),
            Some(true),
            "{file}"
        );
        assert_eq!(
            get_str(get(pod, "seccompProfile").unwrap(), "type"),
            "RuntimeDefault",
            "{file}"
        );
        assert_eq!(
            get(pod_spec(&d), "automountServiceAccountToken").and_then(Value::as_bool),
            Some(false),
            "{file}"
        );
        for c in containers(&d) {
            let sc = get(&c, "securityContext")
                .unwrap_or_else(|| panic!("{file}: container securityContext"));
            assert_eq!(
                get(sc, "readOnlyRootFilesystem").and_then(Value::as_bool),
                Some(true),
                "{file}"
            );
            assert_eq!(
                get(sc, "allowPrivilegeEscalation").and_then(Value::as_bool),
                Some(false),
                "{file}"
            );
            let drop = get(get(sc, "capabilities").unwrap(), "drop")
                .and_then(Value::as_sequence)
                .unwrap();
            assert_eq!(drop, &vec![Value::String("ALL".into())], "{file}");
            let resources = get(&c, "resources").unwrap();
            for (kind, key) in [
                ("requests", "cpu"),
                ("requests", "memory"),
                ("limits", "memory"),
            ] {
                assert!(
                    get(get(resources, kind).unwrap(), key).is_some(),
                    "{file}: {kind}.{key}"
                );
            }
            assert!(
                get(&c, "livenessProbe").is_some() && get(&c, "readinessProbe").is_some(),
                "{file}: probes"
            );
        }
    }
}

fn probe_path(c: &Value, probe: &str) -> String {
    get_str(get(get(c, probe).unwrap(), "httpGet").unwrap(), "path").to_owned()
}

fn container_port(c: &Value, name: &str) -> u64 {
    get(c, "ports")
        .and_then(Value::as_sequence)
        .unwrap()
        .iter()
        .find(|p| get_str(p, "name") == name)
        .and_then(|p| get(p, "containerPort"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no port {name}"))
}

fn env_value(c: &Value, name: &str) -> String {
    get(c, "env")
        .and_then(Value::as_sequence)
        .unwrap()
        .iter()
        .find(|e| get_str(e, "name") == name)
        .map(|e| get_str(e, "value").to_owned())
        .unwrap_or_else(|| panic!("no env {name}"))
}

#[test]
fn containers_listen_where_probes_and_services_look() {
    let ingest = containers(&kind_named(
        "base/ingest.yaml",
        "Deployment",
        "fanout-ingest",
    ))[0]
        .clone();
    let port = container_port(&ingest, "http");
    assert!(env_value(&ingest, "FANOUT_LISTEN").ends_with(&format!(":{port}")));
    assert_eq!(probe_path(&ingest, "readinessProbe"), "/readyz");
    assert_eq!(probe_path(&ingest, "livenessProbe"), "/healthz");
    let router = repo::read("ingest/src/lib.rs");
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert!(
            router.contains(&format!("\"{path}\"")),
            "ingest serves {path}"
        );
    }

    let worker = containers(&kind_named(
        "base/worker.yaml",
        "Deployment",
        "fanout-worker",
    ))[0]
        .clone();
    let port = container_port(&worker, "metrics");
    let listen = env_value(&worker, "FANOUT_METRICS_LISTEN");
    assert!(listen.ends_with(&format!(":{port}")));
    assert_eq!(
        repo::env_default("fanout-worker/src/config.rs", "FANOUT_METRICS_LISTEN").as_deref(),
        Some(listen.as_str()),
        "the manifest repeats the worker's default metrics address"
    );
    let ops = repo::read("fanout-worker/src/metrics.rs");
    assert!(ops.contains("\"/healthz\"") && ops.contains("\"/metrics\""));
    assert_eq!(probe_path(&worker, "livenessProbe"), "/healthz");

    let service = kind_named("base/ingest.yaml", "Service", "fanout-ingest");
    let sp = get(get(&service, "spec").unwrap(), "ports")
        .and_then(Value::as_sequence)
        .unwrap()[0]
        .clone();
    assert_eq!(get_str(&sp, "targetPort"), "http");
    // The Ingress publishes the callbacks and the API only.
    let ingress = kind_named("base/ingress.yaml", "Ingress", "fanout-ingest");
    let text = serde_yaml::to_string(&ingress).unwrap();
    assert!(text.contains("path: /ws/") && text.contains("path: /v1/"));
    assert!(!text.contains("/metrics") && !text.contains("path: /\n"));
    // Prometheus annotations point at the real ports.
    for (d, name) in [
        ("base/ingest.yaml", "fanout-ingest"),
        ("base/worker.yaml", "fanout-worker"),
    ] {
        let dep = kind_named(d, "Deployment", name);
        let ann = get(
            get(
                get(get(&dep, "spec").unwrap(), "template").unwrap(),
                "metadata",
            )
            .unwrap(),
            "annotations",
        )
        .unwrap();
        let c = containers(&dep)[0].clone();
        let p = get(&c, "ports").and_then(Value::as_sequence).unwrap()[0].clone();
        assert_eq!(
            get_str(ann, "prometheus.io/port"),
            get(&p, "containerPort")
                .unwrap()
                .as_u64()
                .unwrap()
                .to_string()
        );
    }
}

#[test]
fn the_worker_has_time_to_drain_before_sigkill() {
    let worker = kind_named("base/worker.yaml", "Deployment", "fanout-worker");
    let grace = get(pod_spec(&worker), "terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
        .unwrap();
    let drain: u64 = config_data()["FANOUT_SHUTDOWN_GRACE_SECS"].parse().unwrap();
    assert!(
        grace > drain,
        "terminationGracePeriodSeconds {grace} must exceed FANOUT_SHUTDOWN_GRACE_SECS {drain}"
    );
}

#[test]
fn kustomizations_name_files_that_exist() {
    let root = repo::root().join("deploy/k8s");
    for dir in [
        "base",
        "overlays/aws-sqs",
        "overlays/redis-streams",
        "overlays/local",
    ] {
        let k = repo::yaml(&format!("deploy/k8s/{dir}/kustomization.yaml"));
        let mut files: Vec<String> = get(&k, "resources")
            .and_then(Value::as_sequence)
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        for generator in get(&k, "secretGenerator")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default()
        {
            for env in get(&generator, "envs")
                .and_then(Value::as_sequence)
                .unwrap()
            {
                files.push(env.as_str().unwrap().to_owned());
            }
        }
        for f in files {
            let path = root.join(dir).join(&f);
            let example = Path::new(&format!("{}.example", path.display())).to_path_buf();
            assert!(
                path.exists() || example.exists(),
                "{dir}/kustomization.yaml names {f}, which does not exist"
            );
        }
    }
}
