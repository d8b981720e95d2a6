//! The parts of the cluster that are real: containers on the local Docker engine (driven
//! through the `docker` CLI) and the loopback forwarders behind Service ports.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use crate::Shared;
use crate::api::FieldErr;
use crate::json::Selector;
use crate::store::{Balancer, Proxy, State};

pub const LABEL: &str = "org.pymacaron.fake-kube";

/// The engine's name of a pod's (first) container, as dockershim named them.
pub fn container_name(pod: &Value) -> String {
    let m = &pod["metadata"];
    let c = pod["spec"]["containers"][0]["name"].as_str().unwrap_or("c");
    let uid = m["uid"]
        .as_str()
        .unwrap_or("")
        .split('-')
        .next()
        .unwrap_or("");
    format!(
        "k8s_{c}_{}_{}_{uid}_0",
        m["name"].as_str().unwrap_or(""),
        m["namespace"].as_str().unwrap_or("")
    )
}

/// `docker ARGS`: stdout, or the first lines of stderr as the error. The CLI is killed
/// when the caller stops waiting (an exec probe's timeout).
pub async fn docker(args: &[&str]) -> Result<String, String> {
    pym_fake_common::docker::output(Command::new("docker").args(args).kill_on_drop(true)).await
}

pub async fn image_present(image: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", image])
        .await
        .is_ok()
}

/// Pulls an image with the credentials of `Options::docker_config`.
pub async fn pull(shared: &Shared, image: &str) -> Result<(), String> {
    pym_fake_common::docker::pull(shared.opts.docker_config.as_deref(), image).await
}

/// `docker run -d ARGS` with `env` passed through the CLI's own environment (`-e KEY`), so
/// that values (secrets) never appear on a command line. Recorded while it runs: a server
/// that stops waits for it before it removes its containers.
pub async fn run(
    shared: &Shared,
    args: &[String],
    env: &[(String, String)],
) -> Result<String, String> {
    let mut cmd = Command::new("docker");
    cmd.arg("run").arg("-d");
    for (k, _) in env {
        cmd.args(["-e", k]);
    }
    cmd.args(args);
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    shared.launching.run(&mut cmd).await
}

/// The loopback ports a container publishes: `(container port, host port)`.
pub async fn ports(name: &str) -> Vec<(u16, u16)> {
    let out = docker(&["port", name]).await.unwrap_or_default();
    // `8080/tcp -> 127.0.0.1:32768`
    out.lines()
        .filter_map(|l| {
            let (c, h) = l.split_once(" -> ")?;
            let c = c.split('/').next()?.trim().parse().ok()?;
            let h = h.rsplit_once(':')?.1.trim().parse().ok()?;
            Some((c, h))
        })
        .collect()
}

pub async fn ip(name: &str) -> Option<String> {
    let out = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        name,
    ])
    .await
    .ok()?;
    out.split_whitespace().next().map(String::from)
}

/// `(running, exit code, OOM killed, startedAt, finishedAt)`, or `None` when the container
/// is gone.
pub async fn state(name: &str) -> Option<(bool, i64, bool, String, String)> {
    let s = docker(&["inspect", "--format", "{{.State.Running}}|{{.State.ExitCode}}|{{.State.OOMKilled}}|{{.State.StartedAt}}|{{.State.FinishedAt}}", name]).await.ok()?;
    let p: Vec<&str> = s.split('|').collect();
    if p.len() < 5 {
        return None;
    }
    Some((
        p[0] == "true",
        p[1].parse().unwrap_or(-1),
        p[2] == "true",
        p[3].to_string(),
        p[4].to_string(),
    ))
}

/// Blocks until the container exits (or is gone: `None`).
pub async fn wait(name: &str) -> Option<i64> {
    docker(&["wait", name]).await.ok()?.trim().parse().ok()
}

pub async fn start(name: &str) -> Result<(), String> {
    docker(&["start", name]).await.map(|_| ())
}

pub async fn stop(name: &str, grace: i64) {
    let _ = docker(&["stop", "-t", &grace.max(0).to_string(), name]).await;
}

pub async fn remove(name: &str) {
    let _ = docker(&["rm", "-f", name]).await;
}

/// `docker logs ARGS` (stdout and stderr interleaved as the engine keeps them).
pub async fn logs(args: &[String]) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg("exec docker \"$@\" 2>&1")
        .arg("sh")
        .args(args)
        .output()
        .await;
    out.map(|o| o.stdout).unwrap_or_default()
}

/// `docker logs --follow ARGS` into a channel until either side ends.
pub async fn follow_logs(args: Vec<String>, tx: tokio::sync::mpsc::Sender<Bytes>) {
    let child = Command::new("sh")
        .arg("-c")
        .arg("exec docker \"$@\" 2>&1")
        .arg("sh")
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else { return };
    let Some(mut out) = child.stdout.take() else {
        return;
    };
    let mut buf = vec![0u8; 8192];
    loop {
        tokio::select! {
            n = out.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() { break },
            },
            _ = tx.closed() => break,
        }
    }
    let _ = child.kill().await;
}

/// Removes every container a server started (when it stops).
pub fn remove_all(instance: &str) {
    pym_fake_common::docker::remove_labelled(&format!("{LABEL}={instance}"));
}

// ---------------------------------------------------------------------------------------
// Service forwarders

/// The range nodePorts come from: kube-apiserver's default `--service-node-port-range`.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Gives every port of a Service a loopback forwarder, reported as its `nodePort`: the one
/// the client asked for, else the one the same port had before, else a free one of
/// [`NODE_PORTS`].
pub fn allocate_service_ports(
    shared: &Shared,
    st: &mut State,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<(), Vec<FieldErr>> {
    node_ports(Some(shared), st, svc, old)
}

/// The nodePorts a dry run answers with: those `allocate_service_ports` would give, with
/// nothing opened or kept.
pub fn preview_service_ports(
    st: &mut State,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<(), Vec<FieldErr>> {
    node_ports(None, st, svc, old)
}

/// Chooses each port's nodePort and, given `shared`, opens its forwarder; without it,
/// only checks that the port could be opened.
fn node_ports(
    shared: Option<&Shared>,
    st: &mut State,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<(), Vec<FieldErr>> {
    if svc["spec"]["type"] == "ExternalName" {
        return Ok(());
    }
    let me = (
        svc["metadata"]["namespace"].clone(),
        svc["metadata"]["name"].clone(),
    );
    let mut taken: HashSet<i64> = st
        .list("services", None)
        .into_iter()
        .filter(|s| {
            (
                s["metadata"]["namespace"].clone(),
                s["metadata"]["name"].clone(),
            ) != me
        })
        .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["nodePort"].as_i64())
        .collect();
    let old_ports = old
        .and_then(|o| o["spec"]["ports"].as_array().cloned())
        .unwrap_or_default();
    let open = |st: &mut State, port: u16| match shared {
        Some(shared) => listen(shared, st, port),
        None => std::net::TcpListener::bind(("127.0.0.1", port))
            .ok()
            .map(|_| port),
    };
    let mut errs = Vec::new();
    let count = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
    for i in 0..count {
        let p = svc["spec"]["ports"][i].clone();
        let wanted = p["nodePort"].as_i64().filter(|n| *n > 0).or_else(|| {
            old_ports
                .iter()
                .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
                .or_else(|| {
                    old_ports
                        .iter()
                        .find(|o| o["name"] == p["name"] && p["name"].is_string())
                })
                .and_then(|o| o["nodePort"].as_i64())
        });
        let field = format!("spec.ports[{i}].nodePort");
        let port = match wanted {
            Some(n) if !NODE_PORTS.contains(&(n as u16)) || n > i64::from(u16::MAX) => {
                errs.push(FieldErr::invalid(
                    field,
                    n.to_string(),
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORTS.start(),
                        NODE_PORTS.end()
                    ),
                ));
                continue;
            }
            Some(n) if taken.contains(&n) => {
                errs.push(FieldErr::invalid(
                    field,
                    n.to_string(),
                    "provided port is already allocated",
                ));
                continue;
            }
            Some(n) if st.proxies.contains_key(&(n as u16)) => n as u16,
            Some(n) => match open(st, n as u16) {
                Some(p) => p,
                None => {
                    errs.push(FieldErr::invalid(
                        field,
                        n.to_string(),
                        "provided port is already allocated",
                    ));
                    continue;
                }
            },
            None => {
                // From a random place in the range, the first port free here.
                let span = u32::from(NODE_PORTS.end() - NODE_PORTS.start()) + 1;
                let from = pym_fake_common::Ids::default().random() as u32 % span;
                let free = (0..span)
                    .map(|k| NODE_PORTS.start() + ((from + k) % span) as u16)
                    .find_map(|n| {
                        let held = taken.contains(&i64::from(n)) || st.proxies.contains_key(&n);
                        if held { None } else { open(st, n) }
                    });
                match free {
                    Some(p) => p,
                    None => {
                        errs.push(FieldErr::invalid(
                            field,
                            "0",
                            "range of valid ports is full: no free port on 127.0.0.1",
                        ));
                        continue;
                    }
                }
            }
        };
        taken.insert(i64::from(port));
        svc["spec"]["ports"][i]["nodePort"] = Value::from(port);
    }
    if errs.is_empty() {
        Ok(())
    } else {
        if old.is_none() && shared.is_some() {
            release_unused_ports(st);
        }
        Err(errs)
    }
}

fn listen(shared: &Shared, st: &mut State, port: u16) -> Option<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
    l.set_nonblocking(true).ok()?;
    let port = l.local_addr().ok()?.port();
    let l = TcpListener::from_std(l).ok()?;
    let shared = self_arc(shared)?;
    let task = tokio::spawn(serve_service(l, shared, port)).abort_handle();
    st.proxies.insert(
        port,
        Proxy {
            node_port: port,
            task,
        },
    );
    Some(port)
}

fn service_key(svc: &Value) -> String {
    format!(
        "{}/{}",
        svc["metadata"]["namespace"].as_str().unwrap_or(""),
        svc["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// Gives a LoadBalancer Service an address of its own, as a cloud load balancer does: a
/// loopback IP (127.0.0.2 and up, one no other Service of any local apiserver holds) where
/// each `spec.ports[].port` answers like its `nodePort`; reported in
/// `status.loadBalancer.ingress`. Other types get an empty `status.loadBalancer`.
pub fn load_balancer(shared: &Shared, st: &mut State, svc: &mut Value) {
    svc["status"]["loadBalancer"] = serde_json::json!({});
    if svc["spec"]["type"] != "LoadBalancer" {
        return;
    }
    let key = service_key(svc);
    let ports: Vec<(u16, u16)> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["port"].as_u64()? as u16, p["nodePort"].as_u64()? as u16)))
        .collect();
    let kept = st
        .balancers
        .get(&key)
        .filter(|b| b.ports == ports)
        .map(|b| b.ip);
    let ip = match kept {
        Some(ip) => Some(ip),
        None => {
            // Ports changed (or a new balancer): a fresh address, the old one let go.
            if let Some(old) = st.balancers.remove(&key) {
                old.tasks.iter().for_each(tokio::task::AbortHandle::abort);
            }
            let taken: HashSet<std::net::Ipv4Addr> = st.balancers.values().map(|b| b.ip).collect();
            let Some(shared) = self_arc(shared) else {
                return;
            };
            (2..=254u8)
                .map(|n| std::net::Ipv4Addr::new(127, 0, 0, n))
                .filter(|ip| !taken.contains(ip))
                .find_map(|ip| {
                    let listeners: Vec<std::net::TcpListener> = ports
                        .iter()
                        .map_while(|(port, _)| std::net::TcpListener::bind((ip, *port)).ok())
                        .collect();
                    if listeners.len() != ports.len() {
                        return None;
                    }
                    let mut tasks = Vec::new();
                    for (l, (_, node_port)) in listeners.into_iter().zip(&ports) {
                        l.set_nonblocking(true).ok()?;
                        let l = TcpListener::from_std(l).ok()?;
                        tasks.push(
                            tokio::spawn(serve_service(l, shared.clone(), *node_port))
                                .abort_handle(),
                        );
                    }
                    st.balancers.insert(
                        key.clone(),
                        Balancer {
                            ip,
                            ports: ports.clone(),
                            tasks,
                        },
                    );
                    Some(ip)
                })
        }
    };
    if let Some(ip) = ip {
        svc["status"]["loadBalancer"] =
            serde_json::json!({"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]});
    }
}

/// The `Arc` of the server's shared state (kept by the state itself).
fn self_arc(shared: &Shared) -> Option<Arc<Shared>> {
    shared.me.upgrade()
}

/// Stops the forwarders whose port no Service holds any more.
pub fn release_unused_ports(st: &mut State) {
    let used: HashSet<u16> = st
        .list("services", None)
        .into_iter()
        .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["nodePort"].as_u64().map(|n| n as u16))
        .collect();
    let gone: Vec<u16> = st
        .proxies
        .keys()
        .filter(|p| !used.contains(p))
        .copied()
        .collect();
    for p in gone {
        if let Some(proxy) = st.proxies.remove(&p) {
            proxy.task.abort();
            st.round_robin.remove(&proxy.node_port);
        }
    }
    let balanced: HashSet<String> = st
        .list("services", None)
        .into_iter()
        .filter(|s| s["spec"]["type"] == "LoadBalancer")
        .map(service_key)
        .collect();
    st.balancers.retain(|k, b| {
        let keep = balanced.contains(k);
        if !keep {
            b.tasks.iter().for_each(tokio::task::AbortHandle::abort);
        }
        keep
    });
}

async fn serve_service(listener: TcpListener, shared: Arc<Shared>, node_port: u16) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let backend = pick_backend(&shared, node_port);
        tokio::spawn(async move {
            let Some((host, port)) = backend else { return };
            let Ok(Ok(mut upstream)) = tokio::time::timeout(
                Duration::from_secs(5),
                TcpStream::connect((host.as_str(), port)),
            )
            .await
            else {
                return;
            };
            let mut client = client;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}

/// The address of the next ready pod behind a Service port (round robin), as of now.
fn pick_backend(shared: &Shared, node_port: u16) -> Option<(String, u16)> {
    let mut st = shared.lock();
    let (svc, port) = st.list("services", None).into_iter().find_map(|s| {
        let p = s["spec"]["ports"]
            .as_array()?
            .iter()
            .find(|p| p["nodePort"].as_u64() == Some(u64::from(node_port)))?;
        Some((s.clone(), p.clone()))
    })?;
    let (pod, container_port) = next_endpoint(&mut st, &svc, &port)?;
    reach(&st, &pod, container_port)
}

/// The pods a Service's Endpoints list, ready or not, as the endpoints controller picks
/// them: selected, with an address, neither terminating (`deletionTimestamp` set: from
/// then on they get no new connections) nor finished. A Service without a selector has
/// none (its Endpoints would be written by hand).
pub fn selected_pods<'a>(st: &'a State, svc: &Value) -> Vec<&'a Value> {
    let sel = Selector::from_map(&svc["spec"]["selector"]);
    if sel.is_empty() {
        return Vec::new();
    }
    st.list(
        "pods",
        Some(svc["metadata"]["namespace"].as_str().unwrap_or("")),
    )
    .into_iter()
    .filter(|p| {
        sel.matches(&p["metadata"]["labels"])
            && p["metadata"]["deletionTimestamp"].is_null()
            && p["status"]["podIP"].is_string()
    })
    .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
    .collect()
}

/// The container port a Service port's `targetPort` (a number or a container port's name)
/// is on one pod.
pub fn target_port(pod: &Value, target: &Value) -> Option<u16> {
    match target {
        Value::Number(n) => n.as_u64().map(|n| n as u16),
        Value::String(name) => pod["spec"]["containers"]
            .as_array()?
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .find(|p| p["name"] == name.as_str())?["containerPort"]
            .as_u64()
            .map(|p| p as u16),
        _ => None,
    }
}

/// The next ready endpoint of a Service port, round robin over the ready pods that have
/// its target port: the pod and that container port.
pub fn next_endpoint(st: &mut State, svc: &Value, port: &Value) -> Option<(Value, u16)> {
    let ready: Vec<(Value, u16)> = selected_pods(st, svc)
        .into_iter()
        .filter(|p| crate::kubelet::is_ready(p))
        .filter_map(|p| Some((p.clone(), target_port(p, &port["targetPort"])?)))
        .collect();
    if ready.is_empty() {
        return None;
    }
    let n = st
        .round_robin
        .entry(port["nodePort"].as_u64().unwrap_or(0) as u16)
        .or_default();
    let picked = ready[*n % ready.len()].clone();
    *n = n.wrapping_add(1);
    Some(picked)
}

/// Where a pod's container port is reached from here: the loopback port the engine
/// published for it, else the container's address on the engine's network; `None` while
/// no container runs.
pub fn reach(st: &State, pod: &Value, container_port: u16) -> Option<(String, u16)> {
    let rt = st.runtime.get(pod["metadata"]["uid"].as_str()?)?;
    match rt.host_ports.get(&container_port) {
        Some(hp) => Some(("127.0.0.1".into(), *hp)),
        None => Some((rt.ip.clone()?, container_port)),
    }
}
