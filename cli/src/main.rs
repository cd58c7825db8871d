//! The `tidepool` binary: daemons, local clusters and admin commands.

mod cluster;
mod simulate;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

/// Tidepool: a distributed object store.
#[derive(Debug, Parser)]
#[command(name = "tidepool", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Placement tools.
    Placement {
        #[command(subcommand)]
        command: PlacementCommand,
    },
    /// Cluster setup.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PlacementCommand {
    /// Compute placement over a map (like `crushtool --test`) and what a change would move.
    Simulate(simulate::SimulateArgs),
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Create a cluster folder: cluster id, cluster CA, and certificates for daemons and admin.
    Init(cluster::InitArgs),
}

/// How a command prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Plain,
    /// For programs.
    Json,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Placement {
            command: PlacementCommand::Simulate(args),
        } => simulate::run(args),
        Command::Cluster {
            command: ClusterCommand::Init(args),
        } => cluster::init(args),
    }
}
