//! Reaching what runs: each pod through the apiserver's proxy, a Service by its external
//! address or the service proxy, and a port-forward for the acceptance tests.

use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

use super::kube::{Kube, kube_error};
use crate::config::gke_about::ServiceType;
use super::observe::svc_of;
use super::{DEPLOYMENT, VERSION};
use crate::config::{Config, PymEnv};
use crate::output::StepProgress;

/// A port-forward's listener: stops (with its connections) when dropped.
pub(super) struct Forward(tokio::task::AbortHandle);

impl Drop for Forward {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Where a check asks: an address, or a path through the apiserver's proxy.
pub(super) enum Reach {
    Direct { host: String, port: u16 },
    Proxy { path: String, what: String },
}

impl Reach {
    pub(super) fn describe(&self) -> String {
        match self {
            Reach::Direct { host, port } => format!("{host}:{port}"),
            Reach::Proxy { what, .. } => what.clone(),
        }
    }
}

/// Asks `reach` for the service contract until it holds (`targets::serves_contract`).
pub(super) async fn check_serves(
    k: &Kube,
    c: &Config,
    reach: &Reach,
    version: &str,
    env: PymEnv,
) -> Result<()> {
    crate::targets::serves_contract(c, &reach.describe(), version, env, |path| async move {
        match reach {
            Reach::Direct { host, port } => {
                Ok(
                    crate::ops::http::get(host, *port, &path, Duration::from_secs(5))
                        .await
                        .map_err(|e| format!("{e:#}")),
                )
            }
            Reach::Proxy { path: base, .. } => k.proxy_get(base, &path).await,
        }
    })
    .await
}

impl Kube {
    /// Each running pod of `name` answers healthy and names `version` in `env`, asked
    /// through the apiserver's pod proxy, before any Service sends it requests.
    pub(super) async fn check_pods(
        &self,
        c: &Config,
        name: &str,
        version: &str,
        env: PymEnv,
        progress: &StepProgress<'_>,
    ) -> Result<()> {
        let selector = format!("{DEPLOYMENT}={name},{VERSION}={version}");
        let pods = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(self.err("list", "pods", &selector))?;
        let running: Vec<String> = pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        if running.is_empty() {
            bail!("no pod of {name} runs {version}");
        }
        for pod in &running {
            let base = format!(
                "/api/v1/namespaces/{}/pods/{pod}:{}/proxy",
                self.names.ns, c.port
            );
            // Whether the proxy refused outright (the one error `proxy_get` gives up on).
            let refused = std::cell::Cell::new(false);
            let what = format!("pod {pod}");
            let asked = crate::targets::serves_contract(c, &what, version, env, |path| {
                let (base, refused) = (&base, &refused);
                async move {
                    let answer = self.proxy_get(base, &path).await;
                    refused.set(answer.is_err());
                    answer
                }
            });
            match asked.await {
                Err(e) if refused.get() => {
                    progress.line(&format!("warning: the pods cannot be asked through the apiserver (pods/proxy is forbidden): their readiness probes vouch for them: {e:#}"));
                    return Ok(());
                }
                r => r?,
            }
        }
        progress.line(&format!(
            "{} pod(s) of {name} serve {version} with PYM_ENV={env}",
            running.len()
        ));
        Ok(())
    }

    /// How to reach the Service of `env` from here: its external address, else through
    /// the apiserver's service proxy.
    pub(super) async fn reach(&self, c: &Config, env: PymEnv) -> Result<Reach> {
        let n = self.names.service(env);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(c.k8s_timeout.get()));
        loop {
            let s = self
                .services()
                .get(&n)
                .await
                .map_err(self.err("get", "services", &n))?;
            let svc = svc_of(&s);
            if let Some(host) = svc.external {
                return Ok(Reach::Direct {
                    host,
                    port: svc.port,
                });
            }
            // A new LoadBalancer gets its address in a minute or two.
            if c.k8s_service_type != ServiceType::LoadBalancer || tokio::time::Instant::now() >= deadline {
                return Ok(Reach::Proxy {
                    path: format!(
                        "/api/v1/namespaces/{}/services/{n}:http/proxy",
                        self.names.ns
                    ),
                    what: format!("service {n}"),
                });
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// A loopback port forwarded to the Service of `env`, as `kubectl port-forward
    /// svc/NAME` does: each connection to it goes to a ready pod the Service selects,
    /// through the apiserver (`pods/portforward`), until the `Forward` is dropped.
    pub(super) async fn port_forward(&self, c: &Config, env: PymEnv) -> Result<(u16, Forward)> {
        let n = self.names.service(env);
        let svc = svc_of(
            &self
                .services()
                .get(&n)
                .await
                .map_err(self.err("get", "services", &n))?,
        );
        let selector = svc
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (pods, target) = (self.pods(), c.port.get());
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (pods, selector) = (pods.clone(), selector.clone());
                tokio::spawn(async move {
                    let list = pods
                        .list(&ListParams::default().labels(&selector))
                        .await
                        .ok()?;
                    let pod = list
                        .items
                        .iter()
                        .find(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))?
                        .metadata
                        .name
                        .clone()?;
                    let mut pf = pods.portforward(&pod, &[target]).await.ok()?;
                    let mut upstream = pf.take_stream(target)?;
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                    drop(upstream);
                    pf.join().await.ok()
                });
            }
        });
        Ok((port, Forward(task.abort_handle())))
    }

    /// GET `path` through the apiserver's proxy: the status and body the pod answered. A
    /// Forbidden proxy ends the checks (asking again cannot help).
    async fn proxy_get(&self, base: &str, path: &str) -> crate::targets::Answer {
        let req = hyper::Request::get(format!("{base}{path}")).body(Vec::new())?;
        Ok(match self.client.request_text(req).await {
            Ok(body) => Ok((200, body)),
            // The pod's own answer (the proxy passes its status through) or the apiserver's.
            Err(kube::Error::Api(s)) if s.code == 403 && s.reason == "Forbidden" => {
                return Err(kube_error(
                    "get",
                    "pods/proxy",
                    base,
                    &self.names.ns,
                    kube::Error::Api(s),
                ));
            }
            Err(kube::Error::Api(s)) if s.code != 0 => Ok((s.code, s.message)),
            Err(e) => Err(format!(
                "{:#}",
                kube_error("get", "proxy", base, &self.names.ns, e)
            )),
        })
    }
}
