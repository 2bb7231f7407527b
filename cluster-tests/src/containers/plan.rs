//! The chart's StatefulSet as containers to run: `helm/tools/pod-plan.py` renders the chart
//! with Helm and resolves what the kubelet would (the pod name, the root password's Secret, the
//! ConfigMap files); this is its output, typed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct PodPlan {
    pub statefulset: String,
    pub headless: String,
    pub replicas: usize,
    pub image: String,
    pub command: Vec<String>,
    pub pods: Vec<PodEnv>,
    pub files: Vec<ConfigFile>,
    pub data_mount: String,
    pub user: Option<u32>,
    pub group: Option<u32>,
    pub read_only_root: bool,
    pub drop_all_capabilities: bool,
    pub no_new_privileges: bool,
    pub memory_limit: Option<u64>,
    pub ports: BTreeMap<String, u16>,
    pub readiness: Option<HttpProbe>,
    pub liveness: Option<HttpProbe>,
    pub termination_grace_seconds: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PodEnv {
    pub name: String,
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ConfigFile {
    pub dir: String,
    pub name: String,
    pub content: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct HttpProbe {
    pub path: String,
    pub port: u16,
}

impl PodPlan {
    /// Renders `chart` with `helm` and the `--set` values in `sets`.
    pub fn render(
        python: &Path,
        helm: &Path,
        chart: &Path,
        sets: &[String],
    ) -> Result<PodPlan, String> {
        let script = chart.join("../tools/pod-plan.py");
        let mut args = vec![
            script.display().to_string(),
            helm.display().to_string(),
            chart.display().to_string(),
        ];
        for s in sets {
            args.push("--set".into());
            args.push(s.clone());
        }
        let out = std::process::Command::new(python)
            .args(&args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        if !out.status.success() {
            return Err(format!(
                "pod-plan.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("pod-plan.py output: {e}"))
    }

    /// Pod `ordinal`'s environment.
    pub fn env(&self, ordinal: usize) -> &BTreeMap<String, String> {
        &self.pods[ordinal].env
    }

    pub fn pod_name(&self, ordinal: usize) -> String {
        format!("{}-{ordinal}", self.statefulset)
    }

    pub fn port(&self, name: &str) -> u16 {
        *self
            .ports
            .get(name)
            .unwrap_or_else(|| panic!("the chart declares no container port named {name}"))
    }
}
