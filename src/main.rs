//! The `quickstore` command.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

// The simulator allocates heavily from several threads: glibc's malloc took about 14% of its
// time, mimalloc a fraction of that (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Store a file under a name (three copies in the name's group).
    Put(quickstore::files::cli::PutArgs),
    /// Fetch a file by name, verified by its BLAKE3 hash.
    Get(quickstore::files::cli::GetArgs),
    /// Delete a name.
    Rm(quickstore::files::cli::RmArgs),
    /// List every name with its newest version, size and holders.
    Ls(quickstore::files::cli::LsArgs),
    /// Run the seeded Kelips simulator and print what it measured.
    Simulate(quickstore::simulate::SimulateArgs),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A node logs what it does; a client command prints its result and only warns.
    let default_level = match cli.command {
        Command::Node(_) | Command::Simulate(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Simulate(args) => args.run(),
        Command::Node(args) => runtime()?.block_on(args.run()),
        Command::Status(args) => runtime()?.block_on(args.run()),
        Command::Put(args) => runtime()?.block_on(args.run()),
        Command::Get(args) => runtime()?.block_on(args.run()),
        Command::Rm(args) => runtime()?.block_on(args.run()),
        Command::Ls(args) => runtime()?.block_on(args.run()),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
