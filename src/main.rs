//! The `quickstore` command.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A decentralized file store: put a file under a name on any node, get it back from any other
/// in one hop.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node until Ctrl-C.
    Node(quickstore::node::NodeArgs),
    /// Show a node's view: group, members, contacts.
    Status(quickstore::client::StatusArgs),
    /// Run the seeded Kelips simulator and print what it measured.
    Simulate(quickstore::simulate::SimulateArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Simulate(args) => args.run(),
        Command::Node(args) => runtime()?.block_on(args.run()),
        Command::Status(args) => runtime()?.block_on(args.run()),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
