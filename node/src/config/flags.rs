//! The command-line flags of `realmq`, each also a config key and a `REALMQ_*` variable: the top
//! layer `Config::load` merges.

use std::path::PathBuf;

use serde::Serialize;

/// The flags of `realmq`: values given on the command line; `None` leaves lower layers in
/// charge. Each is also a config key and a `REALMQ_*` environment variable.
#[derive(Debug, Default, Clone, Serialize, clap::Args)]
pub struct Overrides {
    /// Node id, unique in the cluster [env: REALMQ_NODE_ID] [default: 1]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// Data directory [env: REALMQ_DATA_DIR] [default: ./data]
    #[arg(long, global = true, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// MQTT listener address [env: REALMQ_MQTT_ADDR] [default: 0.0.0.0:1883]
    #[arg(long, global = true, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_addr: Option<String>,
    /// MQTT over TLS, on with --tls-cert; "" turns it off [env: REALMQ_MQTTS_ADDR] [default: 0.0.0.0:8883]
    #[arg(long, global = true, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtts_addr: Option<String>,
    /// MQTT over WebSocket (/mqtt); "" turns it off [env: REALMQ_WS_ADDR] [default: 0.0.0.0:8083]
    #[arg(long, global = true, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_addr: Option<String>,
    /// MQTT over secure WebSocket, on with --tls-cert; "" turns it off [env: REALMQ_WSS_ADDR] [default: 0.0.0.0:8084]
    #[arg(long, global = true, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wss_addr: Option<String>,
    /// PEM certificate chain for TLS [env: REALMQ_TLS_CERT] [default: none, no TLS]
    #[arg(long, global = true, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [env: REALMQ_TLS_KEY]
    #[arg(long, global = true, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle for client certificates [env: REALMQ_TLS_CLIENT_CA] [default: none]
    #[arg(long, global = true, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve the REST API over HTTPS with --tls-cert [env: REALMQ_API_TLS=true]
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_tls: Option<bool>,
    /// REST API address [env: REALMQ_API_ADDR] [default: 0.0.0.0:8090]
    #[arg(long, global = true, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_addr: Option<String>,
    /// Cluster gRPC address [env: REALMQ_CLUSTER_ADDR] [default: 0.0.0.0:7090]
    #[arg(long, global = true, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_addr: Option<String>,
    /// Cluster address peers dial [env: REALMQ_ADVERTISE_ADDR] [default: own --peers entry]
    #[arg(long, global = true, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<String>,
    /// Initial voters, this node included [env: REALMQ_PEERS] [default: none, a single node]
    #[arg(long, global = true, value_name = "1=HOST:PORT,2=HOST:PORT,...")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<String>,
    /// Voters the cluster keeps; more nodes join as learners [env: REALMQ_VOTERS] [default: 3]
    #[arg(long, global = true, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voters: Option<u64>,
    /// Kubernetes StatefulSet name: node id and peers from the pod name [env: REALMQ_K8S_STATEFULSET]
    #[arg(long, global = true, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s_statefulset: Option<String>,
    /// Kubernetes: replicas at first start, if fewer than the voters [env: REALMQ_K8S_REPLICAS]
    #[arg(long = "replicas", global = true, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s_replicas: Option<u64>,
    /// Kubernetes: the headless Service of the StatefulSet [env: REALMQ_K8S_HEADLESS_SERVICE]
    #[arg(long = "headless-service", global = true, value_name = "SVC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s_headless_service: Option<String>,
    /// Accept MQTT clients without credentials [env: REALMQ_ALLOW_ANONYMOUS=true]
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
}
