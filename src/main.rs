//! The `quickstore` command.

use clap::{Parser, Subcommand};

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
    /// Run the seeded Kelips simulator and print what it measured.
    Simulate(quickstore::simulate::SimulateArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Simulate(args) => args.run(),
    }
}
