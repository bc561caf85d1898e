//! Long because the CloudFormation template is one file and each check here reads a different part of it.
//!
//! The CloudFormation template (`deploy/aws/fanout.yaml`) against the code: the headers API Gateway's
//! integrations send are the names ingest reads (`common::gateways::headers`, read from its source so a new
//! header fails here until the template handles it), the integrations call ingest's `/ws/{route}` through a
//! VPC link and nothing public reaches ingest, the task definitions set only settings the binaries read, the
//! ports are the binaries' defaults, every service's metrics reach Prometheus and every alarm pages the
//! required topic, and the IAM roles grant what the issue allows and no more.

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
        headers::SOURCE_IP,
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
    let mapped = [
        headers::CONNECTION_ID,
        headers::GATEWAY_SECRET,
        headers::SOURCE_IP,
    ];
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
        assert_eq!(
            value(headers::SOURCE_IP),
            "context.identity.sourceIp",
            "{name}: the client's address as API Gateway saw it"
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
                    r == "GetAtt:JobQueue.Arn"
                        || r == "GetAtt:BulkJobQueue.Arn"
                        || r == "GetAtt:DeadLetterQueue.Arn",
                    "the worker uses only its own queues (both lanes' and their dead-letter queue), got {r}"
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
        if acts.iter().any(|a| a.starts_with("aps:")) {
            assert_eq!(
                acts,
                ["aps:RemoteWrite"],
                "the collector only writes metrics"
            );
            assert_eq!(res, ["GetAtt:PrometheusWorkspace.Arn"]);
        } else if acts.iter().any(|a| a.starts_with("sqs:")) {
            // Both lanes' queues: the interactive one and the bulk one.
            assert_eq!(res, ["GetAtt:JobQueue.Arn", "GetAtt:BulkJobQueue.Arn"]);
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
    for tg in ["CallbackTargetGroup", "ApiTargetGroup"] {
        let tg = resource(&t, tg);
        assert_eq!(get(props(&tg), "Port").and_then(Value::as_u64), Some(8080));
        assert_eq!(get_str(props(&tg), "HealthCheckPath"), "/readyz");
    }
    let worker = container(&t, "WorkerTaskDefinition");
    let health: Vec<String> = list(get(get(&worker, "HealthCheck").unwrap(), "Command").unwrap())
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        health[3], "/healthz",
        "the worker's health check is its /healthz, which fails when a poller died"
    );
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

/// `Ref:X` / `GetAtt:X.Y` / the string, for a value that may be tagged.
fn text(v: &Value) -> String {
    resource_text(v)
}

fn security_group_ingress(t: &Value) -> Vec<(String, Value)> {
    let mut rules = Vec::new();
    for (name, sg) in of_type(t, "AWS::EC2::SecurityGroup") {
        for rule in get(props(&sg), "SecurityGroupIngress")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default()
        {
            rules.push((name.clone(), rule));
        }
    }
    for (name, rule) in of_type(t, "AWS::EC2::SecurityGroupIngress") {
        rules.push((name, props(&rule).clone()));
    }
    rules
}

#[test]
fn no_public_listener_reaches_the_callbacks() {
    let t = template();
    // Every load balancer is internal, logs its access, and no security group admits the internet.
    let balancers = of_type(&t, "AWS::ElasticLoadBalancingV2::LoadBalancer");
    assert_eq!(balancers.len(), 2, "the callbacks' NLB and the /v1 ALB");
    for (name, lb) in &balancers {
        let p = props(lb);
        assert_eq!(
            get_str(p, "Scheme"),
            "internal",
            "{name} must not be internet-facing"
        );
        let attrs: Vec<(String, String)> = get(p, "LoadBalancerAttributes")
            .and_then(Value::as_sequence)
            .unwrap()
            .iter()
            .map(|a| (get_str(a, "Key").to_owned(), text(get(a, "Value").unwrap())))
            .collect();
        assert!(
            attrs.contains(&("access_logs.s3.enabled".into(), "true".into())),
            "{name}: access logs on"
        );
        assert!(
            attrs.contains(&(
                "access_logs.s3.bucket".into(),
                "Ref:LoadBalancerLogBucket".into()
            )),
            "{name}: access logs go to LoadBalancerLogBucket"
        );
    }
    let log_bucket = get(get(&t, "Parameters").unwrap(), "LoadBalancerLogBucket").unwrap();
    assert!(
        get(log_bucket, "Default").is_none(),
        "access logs are not optional"
    );
    for (group, rule) in security_group_ingress(&t) {
        for key in ["CidrIp", "CidrIpv6"] {
            if let Some(cidr) = get(&rule, key) {
                let cidr = text(cidr);
                assert!(
                    cidr != "0.0.0.0/0" && cidr != "::/0",
                    "{group} admits the internet ({cidr})"
                );
            }
        }
    }
    // The integrations reach ingest through a VPC link whose only target is the internal NLB.
    for (name, integration) in of_type(&t, "AWS::ApiGatewayV2::Integration") {
        let p = props(&integration);
        assert_eq!(get_str(p, "ConnectionType"), "VPC_LINK", "{name}");
        let link = text(get(p, "ConnectionId").unwrap());
        let link = link
            .strip_prefix("Ref:")
            .expect("ConnectionId: !Ref a VPC link");
        let link = resource(&t, link);
        assert_eq!(get_str(&link, "Type"), "AWS::ApiGateway::VpcLink");
        let targets: Vec<String> = list(get(props(&link), "TargetArns").unwrap())
            .iter()
            .map(text)
            .collect();
        assert_eq!(targets, ["Ref:CallbackLoadBalancer"]);
    }
    let nlb = resource(&t, "CallbackLoadBalancer");
    assert_eq!(get_str(props(&nlb), "Type"), "network");
    // The callbacks' load balancer takes no traffic from the VPC, only the VPC link's PrivateLink traffic.
    let nlb_groups: Vec<String> = list(get(props(&nlb), "SecurityGroups").unwrap())
        .iter()
        .map(text)
        .collect();
    for group in &nlb_groups {
        let group = group.strip_prefix("Ref:").unwrap();
        assert!(
            get(props(&resource(&t, group)), "SecurityGroupIngress").is_none(),
            "{group} admits nothing"
        );
        assert!(
            security_group_ingress(&t)
                .iter()
                .all(|(g, r)| g != group
                    && get(r, "GroupId").map(text) != Some(format!("Ref:{group}"))),
            "{group} admits nothing"
        );
    }
    // The /v1 load balancer routes /v1/* only, and only the application's security group reaches it.
    for (name, rule) in of_type(&t, "AWS::ElasticLoadBalancingV2::ListenerRule") {
        let conditions = get(props(&rule), "Conditions")
            .and_then(Value::as_sequence)
            .unwrap();
        for c in conditions {
            let values: Vec<String> =
                list(get(get(c, "PathPatternConfig").unwrap(), "Values").unwrap())
                    .iter()
                    .map(text)
                    .collect();
            assert_eq!(
                values,
                ["/v1/*"],
                "{name}: the ALB serves the application API only"
            );
        }
    }
    let api_sg = resource(&t, "ApiLoadBalancerSecurityGroup");
    for rule in get(props(&api_sg), "SecurityGroupIngress")
        .and_then(Value::as_sequence)
        .unwrap()
    {
        assert_eq!(
            text(get(rule, "SourceSecurityGroupId").unwrap()),
            "Ref:ApiClientSecurityGroupId"
        );
    }
    // Ingest itself admits only the two load balancers.
    let ingest_sg = resource(&t, "IngestSecurityGroup");
    let sources: BTreeSet<String> = get(props(&ingest_sg), "SecurityGroupIngress")
        .and_then(Value::as_sequence)
        .unwrap()
        .iter()
        .map(|r| text(get(r, "SourceSecurityGroupId").expect("from a security group")))
        .collect();
    assert_eq!(
        sources,
        BTreeSet::from([
            "Ref:ApiLoadBalancerSecurityGroup".to_owned(),
            "Ref:CallbackLoadBalancerSecurityGroup".to_owned()
        ])
    );
}

#[test]
fn every_alarm_pages_the_required_topic() {
    let t = template();
    let topic = get(get(&t, "Parameters").unwrap(), "AlarmTopicArn").unwrap();
    assert!(get(topic, "Default").is_none(), "AlarmTopicArn is required");
    assert!(get_str(topic, "AllowedPattern").contains(":sns:"));
    let alarms = of_type(&t, "AWS::CloudWatch::Alarm");
    for (name, alarm) in &alarms {
        for key in ["AlarmActions", "OKActions"] {
            let actions: Vec<String> =
                list(get(props(alarm), key).unwrap_or_else(|| panic!("{name}: {key}")))
                    .iter()
                    .map(text)
                    .collect();
            assert_eq!(actions, ["Ref:AlarmTopicArn"], "{name}: {key}");
        }
        let description = get_str(props(alarm), "AlarmDescription");
        let anchor = description
            .split("deploy/README.md#")
            .nth(1)
            .unwrap_or_else(|| panic!("{name}: link its runbook section"))
            .trim_end_matches(')');
        assert!(
            repo::read("deploy/README.md")
                .lines()
                .any(|l| l.starts_with("### ") && l[4..].trim().to_lowercase() == anchor),
            "{name}: deploy/README.md has no section #{anchor}"
        );
    }
    // What must page on ECS, by the metric it reads.
    let all =
        serde_yaml::to_string(&alarms.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>()).unwrap();
    for metric in [
        "DatabaseMemoryUsagePercentage",
        "HTTPCode_Target_5XX_Count",
        "HTTPCode_ELB_5XX_Count",
        "RunningTaskCount",
        "ApproximateAgeOfOldestMessage",
        "HealthyHostCount",
        "ExecutionError",
    ] {
        assert!(all.contains(metric), "no alarm reads {metric}");
    }
    let dlq = resource(&t, "DeadLetterAlarm");
    let dimension = &get(props(&dlq), "Dimensions")
        .and_then(Value::as_sequence)
        .unwrap()[0];
    assert_eq!(
        text(get(dimension, "Value").unwrap()),
        "GetAtt:DeadLetterQueue.QueueName",
        "the dead-letter queue's depth pages, whoever put the message there"
    );
    let tasks: Vec<String> = alarms
        .iter()
        .filter(|(_, a)| get(props(a), "MetricName").and_then(sub_text) == Some("RunningTaskCount"))
        .flat_map(|(_, a)| {
            get(props(a), "Dimensions")
                .and_then(Value::as_sequence)
                .unwrap()
                .iter()
                .filter(|d| get_str(d, "Name") == "ServiceName")
                .map(|d| text(get(d, "Value").unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        tasks,
        ["GetAtt:IngestService.Name", "GetAtt:WorkerService.Name"],
        "running task count alarms for both services"
    );
    // Prometheus's alert manager pages the same topic.
    let workspace = resource(&t, "PrometheusWorkspace");
    assert!(
        get_str(props(&workspace), "AlertManagerDefinition")
            .contains("topic_arn: ${AlarmTopicArn}")
    );
}

/// The scrape job names Prometheus uses (deploy/prometheus/prometheus.yml), which the alerts select on.
fn prometheus_jobs() -> BTreeSet<String> {
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

#[test]
fn a_collector_next_to_each_service_sends_its_metrics_to_prometheus() {
    let t = template();
    let jobs = prometheus_jobs();
    for (task, job) in [
        ("IngestTaskDefinition", "fanout-ingest"),
        ("WorkerTaskDefinition", "fanout-worker"),
    ] {
        assert!(jobs.contains(job), "{job} is a job the alerts know");
        let containers = get(props(&resource(&t, task)), "ContainerDefinitions")
            .and_then(Value::as_sequence)
            .unwrap()
            .clone();
        let service_port = get(&containers[0], "PortMappings")
            .and_then(Value::as_sequence)
            .unwrap()[0]
            .clone();
        let port = get(&service_port, "ContainerPort")
            .and_then(Value::as_u64)
            .unwrap();
        let collector = containers
            .iter()
            .find(|c| get_str(c, "Name") == "metrics-collector")
            .unwrap_or_else(|| panic!("{task} has no metrics collector"));
        assert_eq!(
            get(collector, "Essential").and_then(Value::as_bool),
            Some(false)
        );
        let config = get(collector, "Environment")
            .and_then(Value::as_sequence)
            .unwrap()
            .iter()
            .find(|e| get_str(e, "Name") == "AOT_CONFIG_CONTENT")
            .map(|e| {
                untag(get(e, "Value").unwrap()).as_sequence().unwrap()[0]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .expect("the collector's configuration");
        let config: Value =
            serde_yaml::from_str(&config).expect("the collector's configuration is YAML");
        let scrape = &get(
            get(
                get(get(&config, "receivers").unwrap(), "prometheus").unwrap(),
                "config",
            )
            .unwrap(),
            "scrape_configs",
        )
        .and_then(Value::as_sequence)
        .unwrap()[0];
        assert_eq!(get_str(scrape, "job_name"), job);
        let target = get(
            &get(scrape, "static_configs")
                .and_then(Value::as_sequence)
                .unwrap()[0],
            "targets",
        )
        .and_then(Value::as_sequence)
        .unwrap()[0]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            target,
            format!("127.0.0.1:{port}"),
            "{task} scrapes its own service"
        );
        let exporter = get(get(&config, "exporters").unwrap(), "prometheusremotewrite").unwrap();
        assert_eq!(
            get_str(exporter, "endpoint"),
            "${Endpoint}api/v1/remote_write"
        );
    }
}

#[test]
fn redis_survives_deletion_and_the_key_that_decrypts_it_stays() {
    let t = template();
    for (name, policy) in [("Redis", "Snapshot"), ("DataKey", "Retain")] {
        let r = resource(&t, name);
        assert_eq!(get_str(&r, "DeletionPolicy"), policy, "{name}");
        assert_eq!(get_str(&r, "UpdateReplacePolicy"), policy, "{name}");
    }
    let nodes = get(get(&t, "Parameters").unwrap(), "RedisNodes").unwrap();
    assert!(
        get(nodes, "MinValue").and_then(Value::as_u64).unwrap() >= 2,
        "Multi-AZ needs a replica"
    );
    let redis = resource(&t, "Redis");
    assert_eq!(
        get(props(&redis), "MultiAZEnabled").and_then(Value::as_bool),
        Some(true)
    );
}

#[test]
fn the_worker_scales_on_waiting_and_in_flight_jobs_per_task() {
    let t = template();
    let policy = resource(&t, "WorkerBacklogScaling");
    let text = serde_yaml::to_string(&policy).unwrap();
    for metric in [
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
        "RunningTaskCount",
    ] {
        assert!(text.contains(metric), "the scaling metric reads {metric}");
    }
    // Both lanes' backlogs count.
    assert!(text.contains("(visible + inflight + bulk_visible + bulk_inflight) / tasks"));
    assert!(text.contains("BulkJobQueue.QueueName"));
    let per_task = parameter_default(&t, "WorkerBacklogPerTask");
    let readme = repo::read("deploy/README.md");
    assert!(
        readme.contains(&format!(
            "| `WorkerBacklogPerTask` / KEDA `queueLength` | {per_task} jobs"
        )),
        "deploy/README.md's sizing table gives the template's default ({per_task})"
    );
    let keda = repo::read("deploy/k8s/overlays/aws-sqs/keda-sqs.yaml");
    assert!(
        keda.contains(&format!("queueLength: \"{per_task}\"")),
        "KEDA's queueLength equals WorkerBacklogPerTask's default ({per_task})"
    );
}
