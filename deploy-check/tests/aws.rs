//! The CloudFormation template (`deploy/aws/fanout.yaml`) against the code: the headers API Gateway's
//! integrations send are the names ingest reads (`common::gateways::headers`, read from its source so a new
//! header fails here until the template handles it), the integrations call ingest's `/ws/{route}`, the task
//! definitions set only settings the binaries read, the ports are the binaries' defaults, and the IAM roles
//! grant what the issue allows and no more.

use deploy_check::repo::{self, get, get_str, sub_text, untag};
use serde_yaml::Value;
use std::collections::BTreeSet;

const TEMPLATE: &str = "deploy/aws/fanout.yaml";

fn template() -> Value {
    repo::yaml(TEMPLATE)
}

fn resources(t: &Value) -> Vec<(String, Value)> {
    get(t, "Resources")
        .and_then(Value::as_mapping)
        .expect("Resources")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

fn resource(t: &Value, name: &str) -> Value {
    resources(t)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no resource {name}"))
        .1
}

fn of_type(t: &Value, kind: &str) -> Vec<(String, Value)> {
    resources(t)
        .into_iter()
        .filter(|(_, r)| get_str(r, "Type") == kind)
        .collect()
}

fn props(r: &Value) -> &Value {
    get(r, "Properties").expect("Properties")
}

/// Every `pub const NAME: &str = "value";` inside `pub mod headers` of common/src/gateways.rs.
fn headers_ingest_reads() -> Vec<String> {
    let source = repo::read("common/src/gateways.rs");
    let module = source
        .split("pub mod headers {")
        .nth(1)
        .expect("gateways.rs has a headers module")
        .split("\n}")
        .next()
        .unwrap();
    module
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_header_list_is_read_from_the_code() {
    use common::gateways::headers;
    let read = headers_ingest_reads();
    for name in [
        headers::CONNECTION_ID,
        headers::API_ID,
        headers::GATEWAY_SECRET,
        headers::FORWARDED_FOR,
        headers::ORIGIN,
    ] {
        assert!(
            read.contains(&name.to_owned()),
            "{name} missing from {read:?}"
        );
    }
}

#[test]
fn integrations_send_exactly_the_headers_ingest_reads() {
    use common::gateways::headers;
    let t = template();
    let integrations = of_type(&t, "AWS::ApiGatewayV2::Integration");
    assert_eq!(integrations.len(), 3, "one integration per route");
    // Headers API Gateway provides itself: it adds X-Amzn-Apigateway-Api-Id to every HTTP integration
    // request (X-Amzn-* headers cannot be mapped), and HTTP_PROXY forwards the browser's handshake headers
    // (Origin, X-Forwarded-For) and query string on $connect.
    let from_api_gateway = [headers::API_ID, headers::FORWARDED_FOR, headers::ORIGIN];
    let mapped = [headers::CONNECTION_ID, headers::GATEWAY_SECRET];
    for header in headers_ingest_reads() {
        assert!(
            from_api_gateway
                .iter()
                .chain(&mapped)
                .any(|h| h.eq_ignore_ascii_case(&header)),
            "ingest reads {header}, which the template neither maps nor gets from API Gateway: map it in every integration's RequestParameters"
        );
    }
    for (name, integration) in integrations {
        let p = props(&integration);
        assert_eq!(get_str(p, "IntegrationType"), "HTTP_PROXY", "{name}");
        assert_eq!(get_str(p, "IntegrationMethod"), "POST", "{name}");
        let params = get(p, "RequestParameters")
            .and_then(|v| untag(v).as_mapping())
            .expect("RequestParameters");
        let keys: BTreeSet<String> = params
            .keys()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        let expected: BTreeSet<String> = mapped
            .iter()
            .map(|h| format!("integration.request.header.{h}"))
            .collect();
        assert_eq!(keys, expected, "{name}: exactly the mapped headers");
        let value = |h: &str| {
            sub_text(&params[Value::String(format!("integration.request.header.{h}"))])
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            value(headers::CONNECTION_ID),
            "context.connectionId",
            "{name}"
        );
        let secret = value(headers::GATEWAY_SECRET);
        assert!(
            secret
                .starts_with("'{{resolve:secretsmanager:${GatewaySecretArn}:SecretString:current:")
                && secret.ends_with("}}'"),
            "{name}: the secret must be a quoted static value resolved from Secrets Manager, got {secret}"
        );
        for h in from_api_gateway {
            assert!(
                !keys
                    .iter()
                    .any(|k| k.to_ascii_lowercase().ends_with(&h.to_ascii_lowercase())),
                "{name}: {h} comes from API Gateway and must not be mapped"
            );
        }
    }
}

#[test]
fn routes_call_ingests_ws_paths() {
    let t = template();
    let ingest_router = repo::read("ingest/src/lib.rs");
    assert!(
        ingest_router.contains("\"/ws/{route}\""),
        "ingest serves /ws/{{route}}"
    );
    let routes = of_type(&t, "AWS::ApiGatewayV2::Route");
    let keys: BTreeSet<&str> = routes
        .iter()
        .map(|(_, r)| get_str(props(r), "RouteKey"))
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["$connect", "$disconnect", "$default"])
    );
    for (name, route) in &routes {
        let p = props(route);
        let key = get_str(p, "RouteKey");
        let target = get_str(p, "Target");
        let integration_name = target
            .strip_prefix("integrations/${")
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or_else(|| {
                panic!("{name}: Target {target} is not integrations/${{Integration}}")
            });
        let uri = get_str(props(&resource(&t, integration_name)), "IntegrationUri").to_owned();
        let slug = key.trim_start_matches('$');
        assert_eq!(
            uri,
            format!("https://${{IngestDomainName}}/ws/{slug}"),
            "{name}"
        );
    }
    let api = props(&resource(&t, "WebSocketApi")).clone();
    assert_eq!(get_str(&api, "ProtocolType"), "WEBSOCKET");
    assert_eq!(
        get_str(&api, "RouteSelectionExpression"),
        "$request.body.action"
    );
}

#[test]
fn the_stage_logs_throttles_and_redeploys_itself() {
    let t = template();
    let stage = resource(&t, "Stage");
    let p = props(&stage);
    assert_eq!(get(p, "AutoDeploy").and_then(Value::as_bool), Some(true));
    let log = get(p, "AccessLogSettings").expect("access logs");
    assert!(get(log, "DestinationArn").is_some());
    assert!(get_str(log, "Format").contains("$context.connectionId"));
    let defaults = get(p, "DefaultRouteSettings").expect("route settings");
    assert!(
        get(defaults, "ThrottlingRateLimit").is_some()
            && get(defaults, "ThrottlingBurstLimit").is_some()
    );
}

fn statements(role: &Value) -> Vec<Value> {
    get(props(role), "Policies")
        .and_then(Value::as_sequence)
        .expect("inline policies")
        .iter()
        .flat_map(|p| {
            get(get(p, "PolicyDocument").unwrap(), "Statement")
                .and_then(Value::as_sequence)
                .unwrap()
                .clone()
        })
        .collect()
}

/// A YAML list, or a single (possibly tagged) value as a list of one.
fn list(v: &Value) -> Vec<Value> {
    match untag(v) {
        Value::Sequence(s) => s.clone(),
        _ => vec![v.clone()],
    }
}

fn actions(statement: &Value) -> Vec<String> {
    list(get(statement, "Action").unwrap())
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// A resource as text: `!GetAtt X.Arn` becomes `GetAtt:X.Arn`, `!Sub "..."` its string, `!Ref X` `Ref:X`,
/// and `!If [condition, A, !Ref AWS::NoValue]` the text of A.
fn resource_text(r: &Value) -> String {
    match (repo::tag(r).as_deref(), untag(r)) {
        (Some("!GetAtt"), v) => format!("GetAtt:{}", v.as_str().unwrap()),
        (Some("!Ref"), v) => format!("Ref:{}", v.as_str().unwrap()),
        (Some("!If"), Value::Sequence(branches)) => {
            assert_eq!(
                resource_text(&branches[2]),
                "Ref:AWS::NoValue",
                "an optional resource: {r:?}"
            );
            resource_text(&branches[1])
        }
        (_, v) => v.as_str().unwrap().to_owned(),
    }
}

fn resource_texts(statement: &Value) -> Vec<String> {
    list(get(statement, "Resource").unwrap())
        .iter()
        .map(resource_text)
        .collect()
}

#[test]
fn the_worker_manages_only_this_apis_connections_and_uses_only_its_queues() {
    let t = template();
    for statement in statements(&resource(&t, "WorkerTaskRole")) {
        let acts = actions(&statement);
        let res = resource_texts(&statement);
        assert!(
            !acts.iter().any(|a| a.contains('*')),
            "no wildcard actions: {acts:?}"
        );
        assert!(
            !res.iter().any(|r| r == "*"),
            "no wildcard resources: {acts:?}"
        );
        if acts.iter().any(|a| a.starts_with("execute-api:")) {
            assert_eq!(acts, ["execute-api:ManageConnections"]);
            for r in &res {
                let this_api = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${WebSocketApi}/${StageName}/";
                let existing_api = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${ExistingApiId}/${ExistingApiStage}/";
                assert!(
                    (r.starts_with(this_api) || r.starts_with(existing_api))
                        && r.ends_with("/@connections/*"),
                    "ManageConnections only on the served APIs' stages' @connections/*, got {r}"
                );
            }
            assert!(
                res.iter()
                    .any(|r| r.contains("${WebSocketApi}/${StageName}/POST/@connections/*"))
            );
        }
        if acts.iter().any(|a| a.starts_with("sqs:")) {
            for r in &res {
                assert!(
                    r == "GetAtt:JobQueue.Arn" || r == "GetAtt:DeadLetterQueue.Arn",
                    "the worker uses only its own queues, got {r}"
                );
            }
            if res.contains(&"GetAtt:DeadLetterQueue.Arn".to_owned()) {
                assert!(
                    acts.iter()
                        .all(|a| a == "sqs:SendMessage" || a == "sqs:GetQueueAttributes")
                );
            }
        }
    }
}

#[test]
fn ingest_may_only_send_to_its_queue() {
    let t = template();
    let mut sends = false;
    for statement in statements(&resource(&t, "IngestTaskRole")) {
        let acts = actions(&statement);
        let res = resource_texts(&statement);
        assert!(
            !acts.iter().any(|a| a.starts_with("execute-api:")),
            "ingest never calls the Management API"
        );
        if acts.iter().any(|a| a.starts_with("sqs:")) {
            assert_eq!(res, ["GetAtt:JobQueue.Arn"]);
            for a in &acts {
                assert!(
                    a == "sqs:SendMessage" || a == "sqs:GetQueueAttributes",
                    "ingest may not {a}"
                );
            }
            sends |= acts.contains(&"sqs:SendMessage".to_owned());
        } else {
            assert!(acts.iter().all(|a| a.starts_with("kms:")), "{acts:?}");
            assert_eq!(res, ["GetAtt:DataKey.Arn"]);
        }
    }
    assert!(sends);
}

fn container(t: &Value, task: &str) -> Value {
    get(props(&resource(t, task)), "ContainerDefinitions")
        .and_then(Value::as_sequence)
        .expect("containers")[0]
        .clone()
}

fn setting_names(container: &Value) -> Vec<String> {
    ["Environment", "Secrets"]
        .iter()
        .flat_map(|key| {
            get(container, key)
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default()
        })
        .map(|e| get_str(&e, "Name").to_owned())
        .collect()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn task_definitions_set_only_settings_the_binaries_read_on_their_default_ports() {
    let t = template();
    for (task, config, listen, required) in [
        (
            "IngestTaskDefinition",
            "ingest/src/config.rs",
            "FANOUT_LISTEN",
            &[
                "FANOUT_REDIS_URL",
                "FANOUT_QUEUE_URL",
                "FANOUT_API_GATEWAYS",
                "FANOUT_API_KEYS",
                "FANOUT_GATEWAY_SECRETS",
            ][..],
        ),
        (
            "WorkerTaskDefinition",
            "fanout-worker/src/config.rs",
            "FANOUT_METRICS_LISTEN",
            &[
                "FANOUT_REDIS_URL",
                "FANOUT_QUEUE_URL",
                "FANOUT_API_GATEWAYS",
            ][..],
        ),
    ] {
        let c = container(&t, task);
        let known = repo::env_settings(config);
        let names = setting_names(&c);
        for n in &names {
            assert!(
                known.contains(n),
                "{task} sets {n}, which {config} does not read"
            );
        }
        for r in required {
            assert!(names.contains(&r.to_string()), "{task} must set {r}");
        }
        let default_port =
            port_of(&repo::env_default(config, listen).expect("a default listen address"));
        let ports: Vec<u64> = get(&c, "PortMappings")
            .and_then(Value::as_sequence)
            .unwrap()
            .iter()
            .map(|p| get(p, "ContainerPort").and_then(Value::as_u64).unwrap())
            .collect();
        assert_eq!(ports, [default_port], "{task}");
        let health: Vec<String> = list(get(get(&c, "HealthCheck").unwrap(), "Command").unwrap())
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            health[2],
            default_port.to_string(),
            "{task} health check port"
        );
        assert_eq!(
            get(&c, "ReadonlyRootFilesystem").and_then(Value::as_bool),
            Some(true)
        );
    }
    let tg = resource(&t, "IngestTargetGroup");
    assert_eq!(get(props(&tg), "Port").and_then(Value::as_u64), Some(8080));
    assert_eq!(get_str(props(&tg), "HealthCheckPath"), "/readyz");
}

fn parameter_default(t: &Value, name: &str) -> u64 {
    get(get(get(t, "Parameters").unwrap(), name).unwrap(), "Default")
        .and_then(Value::as_u64)
        .unwrap()
}

#[test]
fn the_queue_redrive_backs_up_the_workers_own_dead_lettering() {
    let t = template();
    assert!(
        parameter_default(&t, "QueueMaxReceiveCount") > parameter_default(&t, "WorkerMaxReceives"),
        "SQS must not dead-letter before the worker does (the worker records a reason)"
    );
    let queue = resource(&t, "JobQueue");
    let redrive = get(props(&queue), "RedrivePolicy").unwrap();
    assert_eq!(
        repo::tag(get(redrive, "deadLetterTargetArn").unwrap()).as_deref(),
        Some("!GetAtt")
    );
    let worker = container(&t, "WorkerTaskDefinition");
    let env = get(&worker, "Environment")
        .and_then(Value::as_sequence)
        .unwrap();
    let visibility = env
        .iter()
        .find(|e| get_str(e, "Name") == "FANOUT_VISIBILITY_TIMEOUT_SECS")
        .expect("the worker gets the queue's visibility timeout");
    assert_eq!(
        untag(get(visibility, "Value").unwrap()).as_str(),
        Some("QueueVisibilityTimeoutSecs")
    );
    assert_eq!(
        untag(get(props(&queue), "VisibilityTimeout").unwrap()).as_str(),
        Some("QueueVisibilityTimeoutSecs")
    );
}

#[test]
fn redis_is_encrypted_authenticated_and_never_evicts() {
    let t = template();
    let redis = resource(&t, "Redis");
    let p = props(&redis);
    assert_eq!(
        get(p, "TransitEncryptionEnabled").and_then(Value::as_bool),
        Some(true)
    );
    assert_eq!(
        get(p, "AtRestEncryptionEnabled").and_then(Value::as_bool),
        Some(true)
    );
    assert!(get_str(p, "AuthToken").starts_with("{{resolve:secretsmanager:"));
    let url = resource(&t, "RedisUrl");
    assert!(
        get_str(props(&url), "SecretString").starts_with("rediss://:{{resolve:secretsmanager:")
    );
    let params = resource(&t, "RedisParameters");
    assert_eq!(
        get_str(
            get(props(&params), "Properties").unwrap(),
            "maxmemory-policy"
        ),
        "noeviction"
    );
}
