//! A three-node Redis Cluster on free loopback ports (three primaries, no replicas), created with
//! `redis-cli --cluster create` and stopped when dropped: enough to prove that every multi-key operation
//! stays within one slot where it must.

use crate::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running cluster.
#[derive(Debug)]
pub struct RedisCluster {
    ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Child>,
}

impl RedisCluster {
    /// Starts three nodes, joins them into a cluster and waits for `cluster_state:ok` on every node.
    pub fn start() -> Self {
        let ports: Vec<u16> = (0..3).map(|_| free_node_port()).collect();
        let dir = std::env::temp_dir().join(format!(
            "fanout-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let mut cluster = RedisCluster {
            ports: ports.clone(),
            dir: dir.clone(),
            children: Vec::new(),
        };
        for port in &ports {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("create a node directory");
            let child = crate::redis_server(*port, &node_dir)
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--cluster-node-timeout", "5000"])
                .spawn()
                .expect("redis-server starts (./dev test installs it)");
            cluster.children.push(child);
        }
        for port in &ports {
            wait_for(|| crate::ping(*port), "a cluster node to answer PING");
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create failed");
        for port in &ports {
            wait_for(|| cluster_ok(*port), "cluster_state:ok");
        }
        cluster
    }

    /// A `redis+cluster://` URL seeded with every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The plain URL of the first node.
    pub fn node_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.ports[0])
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port whose cluster bus port (the port + 10,000, which a node also listens on) is free too: an
/// ephemeral port another process holds there would stop the node from starting.
fn free_node_port() -> u16 {
    loop {
        let port = free_port();
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return port;
        }
    }
}

fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cluster_ok(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return false;
    };
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query::<String>(&mut conn)
        .is_ok_and(|info| info.contains("cluster_state:ok"))
}
