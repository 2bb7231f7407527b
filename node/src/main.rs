//! The `realmq` binary: parse flags, load and validate the config, run a node until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use realmq_node::Node;
use realmq_node::config::{Config, DEFAULT_TOML, Overrides};

#[derive(Parser)]
#[command(
    name = "realmq",
    version,
    about = "RealMQ: a clustered MQTT 3.1.1 / 5.0 broker and IoT device platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (see `realmq generate-config`).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Node id, unique in the cluster [env: REALMQ_NODE_ID] [default: 1]
    #[arg(long, global = true)]
    node_id: Option<u64>,
    /// Data directory [env: REALMQ_DATA_DIR] [default: ./data]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// MQTT listener address [env: REALMQ_MQTT_ADDR] [default: 0.0.0.0:1883]
    #[arg(long, global = true, value_name = "ADDR")]
    mqtt_addr: Option<String>,
    /// REST API address [env: REALMQ_API_ADDR] [default: 0.0.0.0:8090]
    #[arg(long, global = true, value_name = "ADDR")]
    api_addr: Option<String>,
    /// Cluster gRPC address [env: REALMQ_CLUSTER_ADDR] [default: 0.0.0.0:7090]
    #[arg(long, global = true, value_name = "ADDR")]
    cluster_addr: Option<String>,
    /// Cluster address peers dial [env: REALMQ_ADVERTISE_ADDR] [default: own --peers entry]
    #[arg(long, global = true, value_name = "HOST:PORT")]
    advertise_addr: Option<String>,
    /// Initial voters, this node included [env: REALMQ_PEERS] [default: none, a single node]
    #[arg(long, global = true, value_name = "1=HOST:PORT,2=HOST:PORT,...")]
    peers: Option<String>,
    /// Voters the cluster keeps; more nodes join as learners [env: REALMQ_VOTERS] [default: 3]
    #[arg(long, global = true, value_name = "N")]
    voters: Option<u64>,
    /// Kubernetes StatefulSet name: node id and peers from the pod name [env: REALMQ_K8S_STATEFULSET]
    #[arg(long, global = true, value_name = "NAME")]
    k8s_statefulset: Option<String>,
    /// Kubernetes: replicas at first start, if fewer than the voters [env: REALMQ_K8S_REPLICAS]
    #[arg(long, global = true, value_name = "N")]
    replicas: Option<u64>,
    /// Kubernetes: the headless Service of the StatefulSet [env: REALMQ_K8S_HEADLESS_SERVICE]
    #[arg(long, global = true, value_name = "SVC")]
    headless_service: Option<String>,
    /// Accept MQTT clients without credentials [env: REALMQ_ALLOW_ANONYMOUS=true]
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    allow_anonymous: Option<bool>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default).
    Run,
    /// Print the commented default configuration file.
    GenerateConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::GenerateConfig) = cli.command {
        print!("{DEFAULT_TOML}");
        return ExitCode::SUCCESS;
    }
    let overrides = Overrides {
        node_id: cli.node_id,
        data_dir: cli.data_dir,
        mqtt_addr: cli.mqtt_addr,
        api_addr: cli.api_addr,
        cluster_addr: cli.cluster_addr,
        advertise_addr: cli.advertise_addr,
        peers: cli.peers,
        voters: cli.voters,
        k8s_statefulset: cli.k8s_statefulset,
        k8s_replicas: cli.replicas,
        k8s_headless_service: cli.headless_service,
        allow_anonymous: cli.allow_anonymous,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("realmq: {e}");
            return ExitCode::from(2);
        }
    };
    realmq_node::telemetry::init(&config.log);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("realmq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let node = Node::start(config)?;
    let stop = node.shutdown_token();
    node.spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
        stop.cancel();
    });
    node.wait()
}
