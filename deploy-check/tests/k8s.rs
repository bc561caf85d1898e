//! The Kubernetes manifests (`deploy/k8s`) against the code: the KEDA Redis Streams scaler watches the
//! stream and consumer group the queue uses (`common::keys`, `common::queue::streams::GROUP`), the SQS scaler
//! watches the configured queue, configuration names only settings the binaries read, containers listen
//! where their probes and Services look, every workload is locked down, and kustomizations name files that
//! exist.

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
        env_file("overlays/redis-streams/secrets.env.example")["FANOUT_QUEUE_URL"].clone();
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
    for file in [
        "overlays/aws-sqs/secrets.env.example",
        "overlays/redis-streams/secrets.env.example",
        "overlays/local/local.env",
    ] {
        names.extend(env_file(file).into_keys().map(|k| (file.to_owned(), k)));
    }
    for (source, name) in names {
        assert!(
            known.contains(&name),
            "{source} sets {name}, which no binary reads"
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
