//! A kubelet per pod: schedules it on the one node, resolves its environment, pulls and
//! runs its first container on the local engine, probes it, restarts it (CrashLoopBackOff),
//! and stops it gracefully when the pod is deleted (its `preStop` hook first).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::Shared;
use crate::engine::{self, LABEL};
use crate::json::{self};
use crate::store::PodRuntime;

pub const NODE: &str = "fake-node";

/// Whether a pod's `Ready` condition is true.
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|a| {
        a.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The handle of one pod.
struct Pod {
    shared: Arc<Shared>,
    ns: String,
    name: String,
    uid: String,
    /// The pod as it was first seen (its spec does not change).
    obj: Value,
    container: Value,
    cname: String,
}

enum Seen {
    Gone,
    Deleting(i64),
    Here,
}

impl Pod {
    fn c_name(&self) -> String {
        self.container["name"].as_str().unwrap_or("").to_string()
    }

    fn field_path(&self) -> String {
        format!("spec.containers{{{}}}", self.c_name())
    }

    fn event(&self, kind: &str, reason: &str, message: &str, container: bool) {
        let mut st = self.shared.lock();
        let Some(pod) = st
            .get("pods", &self.ns, &self.name)
            .filter(|p| p["metadata"]["uid"] == self.uid.as_str())
            .cloned()
        else {
            return;
        };
        let fp = if container {
            Some(self.field_path())
        } else {
            None
        };
        st.event(&pod, kind, reason, message, "kubelet", fp.as_deref());
    }

    fn seen(&self) -> Seen {
        let st = self.shared.lock();
        match st
            .get("pods", &self.ns, &self.name)
            .filter(|p| p["metadata"]["uid"] == self.uid.as_str())
        {
            None => Seen::Gone,
            Some(p) if p["metadata"]["deletionTimestamp"].is_string() => Seen::Deleting(
                p["metadata"]["deletionGracePeriodSeconds"]
                    .as_i64()
                    .unwrap_or(30),
            ),
            Some(_) => Seen::Here,
        }
    }

    /// Changes the pod's status (when the pod is still this one).
    fn status(&self, f: impl FnOnce(&mut Value)) {
        let mut st = self.shared.lock();
        if st
            .get("pods", &self.ns, &self.name)
            .is_none_or(|p| p["metadata"]["uid"] != self.uid.as_str())
        {
            return;
        }
        st.update("pods", &self.ns, &self.name, |p| f(&mut p["status"]));
    }

    /// Sets every container's status from the first one's (only the first runs; the others
    /// are reported alongside it) and the conditions that follow.
    fn containers(&self, first: Value) {
        let names: Vec<String> = self.obj["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect();
        let images: Vec<String> = self.obj["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["image"].as_str().unwrap_or("").to_string())
            .collect();
        let statuses: Vec<Value> = names
            .iter()
            .zip(&images)
            .map(|(n, img)| {
                let mut s = first.clone();
                s["name"] = Value::from(n.as_str());
                s["image"] = Value::from(img.as_str());
                s
            })
            .collect();
        let ready = first["ready"] == true;
        let running = first["state"]["running"].is_object();
        let terminal = first["state"]["terminated"].is_object() && !running;
        let names_list = format!("[{}]", names.join(" "));
        self.status(|s| {
            s["containerStatuses"] = Value::from(statuses);
            if running {
                s["phase"] = Value::from("Running");
            }
            let now = json::now();
            let cond = |s: &mut Value, t: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
                let list = s["conditions"].as_array_mut();
                let Some(list) = list else { return };
                let want = if ok { "True" } else { "False" };
                let mut c = json!({"type": t, "status": want, "lastProbeTime": null, "lastTransitionTime": now});
                if let Some(r) = reason {
                    c["reason"] = Value::from(r);
                }
                if let Some(m) = message {
                    c["message"] = Value::from(m);
                }
                match list.iter_mut().find(|x| x["type"] == t) {
                    Some(x) if x["status"] == want => {
                        if let Some(r) = reason {
                            x["reason"] = Value::from(r);
                        }
                    }
                    Some(x) => *x = c,
                    None => list.push(c),
                }
            };
            let (reason, msg) = if ready { (None, None) } else { (Some("ContainersNotReady"), Some(format!("containers with unready status: {names_list}"))) };
            let (reason, msg) = if terminal { (Some("PodCompleted"), None) } else { (reason, msg) };
            cond(s, "ContainersReady", ready, reason, msg.clone());
            cond(s, "Ready", ready, reason, msg);
        });
    }
}

/// Runs one pod until it is deleted.
pub async fn run(shared: Arc<Shared>, ns: String, name: String, uid: String) {
    let obj = shared.lock().get("pods", &ns, &name).cloned();
    let Some(obj) = obj.filter(|p| p["metadata"]["uid"] == uid.as_str()) else {
        shared.lock().kubelets.remove(&uid);
        return;
    };
    let pod = Pod {
        container: obj["spec"]["containers"][0].clone(),
        cname: engine::container_name(&obj),
        shared: shared.clone(),
        ns,
        name,
        uid: uid.clone(),
        obj,
    };
    lifecycle(&pod).await;
    engine::remove(&pod.cname).await;
    let mut st = shared.lock();
    st.kubelets.remove(&uid);
    st.runtime.remove(&uid);
    if st
        .get("pods", &pod.ns, &pod.name)
        .is_some_and(|p| p["metadata"]["uid"] == uid.as_str())
    {
        st.remove("pods", &pod.ns, &pod.name);
    }
}

fn waiting(reason: &str, message: Option<String>, restarts: i64, last: &Value) -> Value {
    let mut w = json!({"reason": reason});
    if let Some(m) = message {
        w["message"] = Value::from(m);
    }
    json!({"name": "", "state": {"waiting": w}, "lastState": last, "ready": false, "restartCount": restarts, "image": "", "imageID": "", "started": false})
}

/// Sleeps `d`, or less when the pod is deleted meanwhile; returns whether it still runs.
async fn pause(pod: &Pod, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if !matches!(pod.seen(), Seen::Here) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250).min(end - Instant::now())).await;
    }
    matches!(pod.seen(), Seen::Here)
}

async fn lifecycle(pod: &Pod) {
    let shared = &pod.shared;
    // Scheduling.
    {
        let mut st = shared.lock();
        let now = json::now();
        let Some(cur) = st.get("pods", &pod.ns, &pod.name).cloned() else {
            return;
        };
        if cur["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
            let updated = st.update("pods", &pod.ns, &pod.name, |p| {
                p["spec"]["nodeName"] = Value::from(NODE);
                p["status"]["conditions"] = json!([
                    {"type": "PodReadyToStartContainers", "status": "False", "lastProbeTime": null, "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
                    {"type": "Ready", "status": "False", "lastProbeTime": null, "lastTransitionTime": now, "reason": "ContainersNotReady", "message": "containers with unready status: [app]"},
                    {"type": "ContainersReady", "status": "False", "lastProbeTime": null, "lastTransitionTime": now, "reason": "ContainersNotReady", "message": "containers with unready status: [app]"},
                    {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
                ]);
                p["status"]["hostIP"] = Value::from("127.0.0.1");
                p["status"]["hostIPs"] = json!([{"ip": "127.0.0.1"}]);
                p["status"]["podIP"] = Value::from("127.0.0.1");
                p["status"]["podIPs"] = json!([{"ip": "127.0.0.1"}]);
                p["status"]["startTime"] = Value::from(now.clone());
            });
            if let Some(p) = updated {
                st.event(
                    &p,
                    "Normal",
                    "Scheduled",
                    &format!("Successfully assigned {}/{} to {NODE}", pod.ns, pod.name),
                    "default-scheduler",
                    None,
                );
            }
        }
    }
    let names: Vec<String> = pod.obj["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let unready = format!("containers with unready status: [{}]", names.join(" "));
    pod.status(|s| {
        for c in s["conditions"].as_array_mut().into_iter().flatten() {
            if c["message"].is_string() {
                c["message"] = Value::from(unready.clone());
            }
        }
    });
    pod.containers(waiting("ContainerCreating", None, 0, &json!({})));
    tokio::time::sleep(shared.opts.step_delay).await;

    // The environment (Secrets may appear later).
    let env = loop {
        match resolve_env(pod) {
            Ok(env) => break env,
            Err(msg) => {
                pod.containers(waiting(
                    "CreateContainerConfigError",
                    Some(msg.clone()),
                    0,
                    &json!({}),
                ));
                pod.event("Warning", "Failed", &format!("Error: {msg}"), true);
                if !pause(pod, Duration::from_secs(3)).await {
                    return graceful_end(pod).await;
                }
            }
        }
    };

    // The image.
    let image = pod.container["image"].as_str().unwrap_or("").to_string();
    let policy = pod.container["imagePullPolicy"]
        .as_str()
        .unwrap_or("IfNotPresent")
        .to_string();
    let mut pull_failures = 0u32;
    loop {
        let present = engine::image_present(&image).await;
        if policy == "Never" && !present {
            let msg =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            pod.containers(waiting(
                "ErrImageNeverPull",
                Some(msg.clone()),
                0,
                &json!({}),
            ));
            pod.event("Warning", "ErrImageNeverPull", &msg, true);
            if !pause(pod, Duration::from_secs(10)).await {
                return graceful_end(pod).await;
            }
            continue;
        }
        if present && policy != "Always" {
            pod.event(
                "Normal",
                "Pulled",
                &format!("Container image \"{image}\" already present on machine"),
                true,
            );
            break;
        }
        pod.event(
            "Normal",
            "Pulling",
            &format!("Pulling image \"{image}\""),
            true,
        );
        let t0 = Instant::now();
        match engine::pull(shared, &image).await {
            Ok(()) => {
                let s = t0.elapsed().as_secs_f64();
                pod.event("Normal", "Pulled", &format!("Successfully pulled image \"{image}\" in {s:.3}s ({s:.3}s including waiting)"), true);
                break;
            }
            Err(e) => {
                pull_failures += 1;
                let msg = format!("Failed to pull image \"{image}\": {e}");
                pod.event("Warning", "Failed", &msg, true);
                pod.event("Warning", "Failed", "Error: ErrImagePull", true);
                pod.containers(waiting("ErrImagePull", Some(msg.clone()), 0, &json!({})));
                if !pause(pod, Duration::from_secs(1)).await {
                    return graceful_end(pod).await;
                }
                let backoff = Duration::from_secs((10u64 << (pull_failures - 1).min(5)).min(300));
                pod.containers(waiting(
                    "ImagePullBackOff",
                    Some(format!(
                        "Back-off pulling image \"{image}\": ErrImagePull: {e}"
                    )),
                    0,
                    &json!({}),
                ));
                pod.event(
                    "Normal",
                    "BackOff",
                    &format!("Back-off pulling image \"{image}\""),
                    true,
                );
                pod.event("Warning", "Failed", "Error: ImagePullBackOff", true);
                if !pause(pod, backoff).await {
                    return graceful_end(pod).await;
                }
            }
        }
    }

    // Create and start.
    let mut restarts: i64 = 0;
    let mut last_state = json!({});
    let mut crashes = 0u32;
    let container_id = loop {
        match create(pod, &env).await {
            Ok(id) => break id,
            Err(e) => {
                pod.containers(waiting(
                    "CreateContainerError",
                    Some(e.clone()),
                    0,
                    &json!({}),
                ));
                pod.event("Warning", "Failed", &format!("Error: {e}"), true);
                if !pause(pod, Duration::from_secs(5)).await {
                    return graceful_end(pod).await;
                }
            }
        }
    };
    pod.event(
        "Normal",
        "Created",
        &format!("Created container {}", pod.c_name()),
        true,
    );
    pod.event(
        "Normal",
        "Started",
        &format!("Started container {}", pod.c_name()),
        true,
    );
    let image_id = engine::docker(&["image", "inspect", "--format", "{{.Id}}", &image])
        .await
        .unwrap_or_default();
    let restart_policy = pod.obj["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or("Always")
        .to_string();

    loop {
        // One run of the container.
        record_runtime(pod).await;
        let started_at = engine::state(&pod.cname)
            .await
            .map(|s| s.3)
            .unwrap_or_else(json::now);
        let started_at = json::parse_time(&started_at).map_or_else(json::now, json::rfc3339);
        let running = |ready: bool, started: bool| {
            json!({
                "name": "", "state": {"running": {"startedAt": started_at}}, "lastState": last_state, "ready": ready,
                "restartCount": restarts, "image": image, "imageID": format!("docker-pullable://{image}@{image_id}"),
                "containerID": format!("docker://{container_id}"), "started": started,
            })
        };
        let mut probes = Probes::new(&pod.container);
        pod.status(|s| {
            for c in s["conditions"].as_array_mut().into_iter().flatten() {
                if c["type"] == "PodReadyToStartContainers" && c["status"] != "True" {
                    c["status"] = Value::from("True");
                    c["lastTransitionTime"] = Value::from(json::now());
                }
            }
        });
        let mut reported = running(probes.ready(), probes.started());
        pod.containers(reported.clone());
        let cname = pod.cname.clone();
        let mut exited = Box::pin(async move { engine::wait(&cname).await });
        let run_start = Instant::now();
        let outcome = loop {
            tokio::select! {
                _ = &mut exited => break Outcome::Exited,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            match pod.seen() {
                Seen::Gone => return,
                Seen::Deleting(grace) => {
                    pod.event(
                        "Normal",
                        "Killing",
                        &format!("Stopping container {}", pod.c_name()),
                        true,
                    );
                    let mut s = reported.clone();
                    s["ready"] = Value::from(false);
                    pod.containers(s);
                    kill(pod, grace).await;
                    return;
                }
                Seen::Here => {}
            }
            if let Some(kill) = probes.run(pod).await {
                break kill;
            }
            let now = running(probes.ready(), probes.started());
            if now != reported {
                reported = now;
                pod.containers(reported.clone());
            }
        };
        // The container ended (or is being killed by its liveness probe).
        if let Outcome::Liveness = outcome {
            let grace = pod.obj["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30);
            pod.event(
                "Normal",
                "Killing",
                &format!(
                    "Container {} failed liveness probe, will be restarted",
                    pod.c_name()
                ),
                true,
            );
            kill(pod, grace).await;
        }
        let Some((_, code, oom, started, finished)) = engine::state(&pod.cname).await else {
            return;
        };
        let reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let t = |s: &str| json::parse_time(s).map_or_else(json::now, json::rfc3339);
        let terminated = json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": t(&started), "finishedAt": t(&finished), "containerID": format!("docker://{container_id}")}});
        if !matches!(pod.seen(), Seen::Here) {
            return graceful_end(pod).await;
        }
        let restart = restart_policy == "Always" || (restart_policy == "OnFailure" && code != 0);
        if !restart {
            let mut s = running(false, false);
            s["state"] = terminated.clone();
            pod.containers(s);
            pod.status(|s| {
                s["phase"] = Value::from(if code == 0 { "Succeeded" } else { "Failed" })
            });
            while pause(pod, Duration::from_secs(1)).await {}
            return graceful_end(pod).await;
        }
        if run_start.elapsed() > Duration::from_secs(600) {
            crashes = 0;
        }
        crashes += 1;
        restarts += 1;
        last_state = terminated.clone();
        if crashes > 1 {
            let backoff = Duration::from_secs((10u64 << (crashes - 2).min(5)).min(300));
            let msg = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                backoff.as_secs(),
                pod.c_name(),
                pod.name,
                pod.ns,
                pod.uid
            );
            let mut s = waiting("CrashLoopBackOff", Some(msg), restarts - 1, &terminated);
            s["containerID"] = Value::from(format!("docker://{container_id}"));
            s["image"] = Value::from(image.as_str());
            pod.containers(s);
            pod.event(
                "Warning",
                "BackOff",
                &format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    pod.c_name(),
                    pod.name,
                    pod.ns,
                    pod.uid
                ),
                true,
            );
            if !pause(pod, backoff).await {
                return graceful_end(pod).await;
            }
        }
        pod.event(
            "Normal",
            "Pulled",
            &format!("Container image \"{image}\" already present on machine"),
            true,
        );
        if let Err(e) = engine::start(&pod.cname).await {
            pod.event("Warning", "Failed", &format!("Error: {e}"), true);
        } else {
            pod.event(
                "Normal",
                "Created",
                &format!("Created container {}", pod.c_name()),
                true,
            );
            pod.event(
                "Normal",
                "Started",
                &format!("Started container {}", pod.c_name()),
                true,
            );
        }
    }
}

enum Outcome {
    Exited,
    Liveness,
}

/// A pod that is being deleted before (or after) its container ran.
async fn graceful_end(pod: &Pod) {
    if let Seen::Deleting(grace) = pod.seen()
        && engine::state(&pod.cname).await.is_some_and(|s| s.0)
    {
        pod.event(
            "Normal",
            "Killing",
            &format!("Stopping container {}", pod.c_name()),
            true,
        );
        kill(pod, grace).await;
    }
}

/// Stops the running container as the kubelet's `killContainer` does: the first
/// container's `preStop` hook runs for at most the grace period (meanwhile the container
/// runs on and serves the connections it has; a terminating pod gets no new ones), then
/// `docker stop` gets what is left of it, 2 s at least. A pod force-deleted during the hook
/// returns at once (its container is then removed).
async fn kill(pod: &Pod, grace: i64) {
    let hook = &pod.container["lifecycle"]["preStop"];
    let mut grace = grace;
    if hook.is_object() && grace > 0 {
        let t0 = Instant::now();
        if !pre_stop(pod, hook, grace).await {
            return;
        }
        grace -= t0.elapsed().as_secs() as i64;
    }
    engine::stop(&pod.cname, grace.max(2)).await;
}

/// Runs a `preStop` hook until it ends or `grace` seconds pass (or fewer, when the pod is
/// deleted again with a shorter grace period); a hook still running then is left behind,
/// as the kubelet leaves it. `false`: the pod is gone.
async fn pre_stop(pod: &Pod, hook: &Value, grace: i64) -> bool {
    let t0 = Instant::now();
    let work = async {
        if hook["sleep"].is_object() {
            tokio::time::sleep(Duration::from_secs(
                hook["sleep"]["seconds"].as_u64().unwrap_or(0),
            ))
            .await;
            return Ok(());
        }
        if hook["httpGet"].is_object() {
            return check(pod, hook, Duration::from_secs(grace as u64)).await;
        }
        let cmd: Vec<String> = hook["exec"]["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect();
        if cmd.is_empty() {
            // `tcpSocket` is accepted but not supported as a hook.
            return Err("no supported action".to_string());
        }
        if let Some(d) = sleep_command(&cmd) {
            tokio::time::sleep(d).await;
            return Ok(());
        }
        let mut args = vec!["exec".to_string(), pod.cname.clone()];
        args.extend(cmd);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        engine::docker(&argv).await.map(|_| ())
    };
    tokio::pin!(work);
    let mut deadline = t0 + Duration::from_secs(grace as u64);
    loop {
        tokio::select! {
            r = &mut work => {
                if r.is_err() {
                    // The kubelet keeps the reason out of the event (it may hold secrets).
                    pod.event("Warning", "FailedPreStopHook", "PreStopHook failed", true);
                }
                return true;
            }
            _ = tokio::time::sleep(Duration::from_millis(250).min(deadline.saturating_duration_since(Instant::now()))) => {}
        }
        match pod.seen() {
            Seen::Gone => return false,
            Seen::Deleting(g) => deadline = deadline.min(t0 + Duration::from_secs(g.max(0) as u64)),
            Seen::Here => {}
        }
        if Instant::now() >= deadline {
            return true;
        }
    }
}

/// An exec hook that only sleeps (`["sleep", "N"]`, `["sh", "-c", "sleep N"]`): waited for
/// here, to the millisecond, rather than through `docker exec`.
fn sleep_command(cmd: &[String]) -> Option<Duration> {
    let line = match cmd {
        [s, n] if s == "sleep" || s == "/bin/sleep" => format!("sleep {n}"),
        [sh, c, line]
            if matches!(sh.as_str(), "sh" | "/bin/sh" | "bash" | "/bin/bash") && c == "-c" =>
        {
            line.clone()
        }
        _ => return None,
    };
    let n: f64 = line.trim().strip_prefix("sleep ")?.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then(|| Duration::from_secs_f64(n))
}

/// The container's environment: values, `$(VAR)` references, Secret keys, pod fields.
fn resolve_env(pod: &Pod) -> Result<Vec<(String, String)>, String> {
    let st = pod.shared.lock();
    let mut env: Vec<(String, String)> = Vec::new();
    let secret = |name: &str| st.get("secrets", &pod.ns, name).cloned();
    for from in pod.container["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = from["secretRef"]["name"].as_str() {
            match secret(name) {
                Some(s) => {
                    let prefix = from["prefix"].as_str().unwrap_or("");
                    for (k, v) in s["data"].as_object().into_iter().flatten() {
                        let v = v.as_str().and_then(json::b64decode).unwrap_or_default();
                        env.push((
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                        ));
                    }
                }
                None if from["secretRef"]["optional"] == true => {}
                None => return Err(format!("secret \"{name}\" not found")),
            }
        } else if let Some(name) = from["configMapRef"]["name"].as_str()
            && from["configMapRef"]["optional"] != true
        {
            return Err(format!("configmap \"{name}\" not found"));
        }
    }
    for e in pod.container["env"].as_array().into_iter().flatten() {
        let Some(name) = e["name"].as_str() else {
            continue;
        };
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &env)
        } else if e["valueFrom"]["secretKeyRef"].is_object() {
            let r = &e["valueFrom"]["secretKeyRef"];
            let sname = r["name"].as_str().unwrap_or("");
            let key = r["key"].as_str().unwrap_or("");
            let optional = r["optional"] == true;
            match secret(sname) {
                None if optional => continue,
                None => return Err(format!("secret \"{sname}\" not found")),
                Some(s) => match s["data"][key].as_str().and_then(json::b64decode) {
                    Some(v) => String::from_utf8_lossy(&v).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(format!(
                            "couldn't find key {key} in Secret {}/{sname}",
                            pod.ns
                        ));
                    }
                },
            }
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => pod.name.clone(),
                "metadata.namespace" => pod.ns.clone(),
                "metadata.uid" => pod.uid.clone(),
                "spec.nodeName" => NODE.into(),
                "spec.serviceAccountName" => pod.obj["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default")
                    .into(),
                "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
                p => {
                    let key = p
                        .strip_prefix("metadata.labels['")
                        .or(p.strip_prefix("metadata.annotations['"))
                        .and_then(|k| k.strip_suffix("']"));
                    let map = if p.starts_with("metadata.labels") {
                        "labels"
                    } else {
                        "annotations"
                    };
                    key.and_then(|k| pod.obj["metadata"][map][k].as_str())
                        .unwrap_or("")
                        .to_string()
                }
            }
        } else if let Some(name) = e["valueFrom"]["configMapKeyRef"]["name"].as_str() {
            if e["valueFrom"]["configMapKeyRef"]["optional"] == true {
                continue;
            }
            return Err(format!("configmap \"{name}\" not found"));
        } else {
            String::new()
        };
        env.retain(|(k, _)| k != name);
        env.push((name.to_string(), value));
    }
    Ok(env)
}

/// `$(VAR)` from the variables defined before; `$$` escapes.
fn expand(v: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, val)) => out.push_str(val),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

async fn create(pod: &Pod, env: &[(String, String)]) -> Result<String, String> {
    let shared = &pod.shared;
    engine::remove(&pod.cname).await;
    let c = &pod.container;
    let mut args: Vec<String> = vec![
        "--name".into(),
        pod.cname.clone(),
        "--label".into(),
        format!("{LABEL}={}", shared.instance),
        "--label".into(),
        format!("{LABEL}.namespace={}", pod.ns),
        "--label".into(),
        format!("{LABEL}.pod={}", pod.name),
        "--label".into(),
        format!("io.kubernetes.pod.uid={}", pod.uid),
        "--hostname".into(),
        pod.name.chars().take(63).collect(),
    ];
    for p in c["ports"].as_array().into_iter().flatten() {
        if let Some(port) = p["containerPort"].as_u64() {
            let proto = if p["protocol"] == "UDP" { "/udp" } else { "" };
            args.extend(["-p".into(), format!("127.0.0.1::{port}{proto}")]);
        }
    }
    if let Some(w) = c["workingDir"].as_str() {
        args.extend(["-w".into(), w.into()]);
    }
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(|s| expand(s, env)))
            .collect()
    };
    let command = strings(&c["command"]);
    let cargs = strings(&c["args"]);
    if let Some(entry) = command.first() {
        args.extend(["--entrypoint".into(), entry.clone()]);
    }
    args.push(c["image"].as_str().unwrap_or("").to_string());
    args.extend(command.into_iter().skip(1));
    args.extend(cargs);
    let id = engine::run(shared, &args, env).await?;
    Ok(id.chars().take(64).collect())
}

async fn record_runtime(pod: &Pod) {
    let ports = engine::ports(&pod.cname).await;
    let ip = engine::ip(&pod.cname).await.filter(|i| !i.is_empty());
    let mut st = pod.shared.lock();
    // The pod's address is its container's on the engine's network, where each of its
    // ports answers (127.0.0.1 until the container runs).
    if let Some(ip) = &ip {
        st.update("pods", &pod.ns, &pod.name, |p| {
            if p["metadata"]["uid"] == pod.uid.as_str() {
                p["status"]["podIP"] = Value::from(ip.as_str());
                p["status"]["podIPs"] = json!([{"ip": ip}]);
            }
        });
    }
    let rt = PodRuntime {
        host_ports: ports.into_iter().collect::<HashMap<u16, u16>>(),
        ip,
    };
    st.runtime.insert(pod.uid.clone(), rt);
}

/// One probe's schedule and counters.
struct Probe {
    spec: Value,
    kind: &'static str,
    next: Instant,
    successes: u32,
    failures: u32,
    ok: bool,
}

impl Probe {
    fn new(spec: &Value, kind: &'static str, ok: bool) -> Option<Probe> {
        if !spec.is_object() {
            return None;
        }
        let delay = spec["initialDelaySeconds"].as_u64().unwrap_or(0);
        Some(Probe {
            spec: spec.clone(),
            kind,
            next: Instant::now() + Duration::from_secs(delay),
            successes: 0,
            failures: 0,
            ok,
        })
    }

    fn int(&self, k: &str, d: u64) -> u64 {
        self.spec[k].as_u64().filter(|v| *v > 0).unwrap_or(d)
    }
}

struct Probes {
    startup: Option<Probe>,
    readiness: Option<Probe>,
    liveness: Option<Probe>,
}

impl Probes {
    fn new(c: &Value) -> Probes {
        Probes {
            startup: Probe::new(&c["startupProbe"], "Startup", false),
            readiness: Probe::new(&c["readinessProbe"], "Readiness", false),
            liveness: Probe::new(&c["livenessProbe"], "Liveness", true),
        }
    }

    fn started(&self) -> bool {
        self.startup.as_ref().is_none_or(|p| p.ok)
    }

    fn ready(&self) -> bool {
        self.started() && self.readiness.as_ref().is_none_or(|p| p.ok)
    }

    /// Runs the probes that are due; `Some` when the liveness (or startup) probe says
    /// the container must be restarted.
    async fn run(&mut self, pod: &Pod) -> Option<Outcome> {
        let started = self.started();
        for probe in [
            self.startup.as_mut().filter(|_| !started),
            self.readiness.as_mut().filter(|_| started),
            self.liveness.as_mut().filter(|_| started),
        ]
        .into_iter()
        .flatten()
        {
            if Instant::now() < probe.next {
                continue;
            }
            let period = probe.int("periodSeconds", 10);
            let timeout = probe.int("timeoutSeconds", 1);
            let result = check(pod, &probe.spec, Duration::from_secs(timeout)).await;
            probe.next = Instant::now() + Duration::from_secs(period);
            match result {
                Ok(()) => {
                    probe.failures = 0;
                    probe.successes += 1;
                    if probe.successes as u64 >= probe.int("successThreshold", 1) {
                        probe.ok = true;
                    }
                }
                Err(msg) => {
                    probe.successes = 0;
                    probe.failures += 1;
                    pod.event(
                        "Warning",
                        "Unhealthy",
                        &format!("{} probe failed: {msg}", probe.kind),
                        true,
                    );
                    if probe.failures as u64 >= probe.int("failureThreshold", 3) {
                        probe.ok = false;
                        if probe.kind != "Readiness" {
                            return Some(Outcome::Liveness);
                        }
                    }
                }
            }
        }
        None
    }
}

/// The port a probe names (a number or a container port's name).
fn probe_port(c: &Value, port: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().map(|p| p as u16),
        Value::String(s) => match s.parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => c["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == s.as_str())?["containerPort"]
                .as_u64()
                .map(|p| p as u16),
        },
        _ => None,
    }
}

/// One try of a probe: against the container's address on the engine network (or its
/// published loopback port when that address is unknown).
async fn check(pod: &Pod, spec: &Value, timeout: Duration) -> Result<(), String> {
    let (action, port) = if spec["httpGet"].is_object() {
        ("http", probe_port(&pod.container, &spec["httpGet"]["port"]))
    } else if spec["tcpSocket"].is_object() {
        (
            "tcp",
            probe_port(&pod.container, &spec["tcpSocket"]["port"]),
        )
    } else if spec["exec"].is_object() {
        ("exec", None)
    } else if spec["grpc"].is_object() {
        ("tcp", spec["grpc"]["port"].as_u64().map(|p| p as u16))
    } else {
        return Ok(());
    };
    if action == "exec" {
        let cmd: Vec<String> = spec["exec"]["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect();
        let mut args = vec!["exec".to_string(), pod.cname.clone()];
        args.extend(cmd);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        return match tokio::time::timeout(
            timeout.max(Duration::from_secs(1)),
            engine::docker(&argv),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("command timed out after {}s", timeout.as_secs())),
        };
    }
    let Some(port) = port else {
        return Err("the probe names no port".into());
    };
    let (host, connect_port) = {
        let st = pod.shared.lock();
        match st.runtime.get(&pod.uid) {
            Some(rt) if rt.ip.is_some() => (rt.ip.clone().unwrap_or_default(), port),
            Some(rt) => (
                "127.0.0.1".to_string(),
                rt.host_ports.get(&port).copied().unwrap_or(port),
            ),
            None => ("127.0.0.1".to_string(), port),
        }
    };
    let shown = format!("127.0.0.1:{port}");
    let dial = |e: std::io::Error| {
        let what = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
            _ => e.to_string(),
        };
        format!("dial tcp {shown}: {what}")
    };
    if action == "tcp" {
        return match tokio::time::timeout(
            timeout,
            TcpStream::connect((host.as_str(), connect_port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(dial(e)),
            Err(_) => Err(format!("dial tcp {shown}: i/o timeout")),
        };
    }
    let path = spec["httpGet"]["path"].as_str().unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let url = format!("http://{shown}{path}");
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {shown}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for h in spec["httpGet"]["httpHeaders"]
        .as_array()
        .into_iter()
        .flatten()
    {
        head.push_str(&format!(
            "{}: {}\r\n",
            h["name"].as_str().unwrap_or(""),
            h["value"].as_str().unwrap_or("")
        ));
    }
    head.push_str("\r\n");
    let attempt = async {
        let mut s = TcpStream::connect((host.as_str(), connect_port))
            .await
            .map_err(|e| format!("Get \"{url}\": {}", dial(e)))?;
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| format!("Get \"{url}\": read tcp: {e}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        if buf.is_empty() {
            return Err(format!("Get \"{url}\": EOF"));
        }
        let status: u16 = String::from_utf8_lossy(&buf)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response"))?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {status}"))
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}
