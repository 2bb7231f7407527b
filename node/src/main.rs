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
    #[command(flatten)]
    overrides: Overrides,
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
    let config = match Config::load(cli.config.as_deref(), &cli.overrides) {
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
