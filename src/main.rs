//! The `quickstore` command.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

// The simulator allocates heavily from several threads: glibc's malloc took about 14% of its
// time, mimalloc a fraction of that (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A decentralized file store: put a file under a name on any node, get it back from any other
/// in one hop.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Examples:
  quickstore node                                  run a node (founds a network)
  quickstore put ./report.pdf docs/report.pdf     store a file through the local node
  quickstore get docs/report.pdf -o -             fetch it to standard output
  quickstore ls                                    list every name

Exit status: 0 on success, 1 with one line on standard error otherwise."
)]
struct Cli {
    /// Print only errors: no results, progress bars or warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log more to standard error: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node until Ctrl-C.
    Node(quickstore::node::NodeArgs),
    /// Show a node's view: group, members, contacts.
    Status(quickstore::client::StatusArgs),
    /// Store a file, a stream or a directory under a name (R copies in the name's group).
    Put(quickstore::files::cli::PutArgs),
    /// Fetch a file by name (or a tree by prefix), verified by its BLAKE3 hash.
    Get(quickstore::files::cli::GetArgs),
    /// Delete a name.
    Rm(quickstore::files::cli::RmArgs),
    /// List names with their newest version, size and copies.
    Ls(quickstore::files::cli::LsArgs),
    /// Let another writer identity write the names under a prefix this identity owns.
    Grant(quickstore::files::cli::GrantArgs),
    /// Print this client's writer identity (the PeerId that owns the names it writes).
    Id(quickstore::files::cli::IdArgs),
    /// Make a key: `--network FILE` writes a new private network key (never overwrites).
    #[command(after_help = "Example:
  quickstore keygen --network swarm.key
  quickstore node --network-key swarm.key")]
    Keygen {
        /// Where to write the private network's pre-shared key.
        #[arg(long, value_name = "FILE")]
        network: PathBuf,
    },
    /// Run the seeded Kelips simulator and print what it measured.
    Simulate(quickstore::simulate::SimulateArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Example:
  quickstore completions bash > ~/.local/share/bash-completion/completions/quickstore")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of quickstore.
    #[command(after_help = "Example:
  quickstore man > quickstore.1 && man ./quickstore.1")]
    Man,
}

fn main() {
    if let Err(e) = run() {
        // One line, whatever the error's chain held.
        eprintln!(
            "error: {}",
            quickstore::files::client::one_line(&format!("{e:#}"))
        );
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Node(_)) {
        // A client command piped into `head` stops quietly when its reader goes, as `cat`
        // does, instead of panicking in `println!` ("failed printing to stdout: Broken
        // pipe"). Sockets are not affected (they are written with MSG_NOSIGNAL); a node
        // keeps ignoring SIGPIPE.
        // SAFETY: signal(2) with the default disposition, before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // A node logs what it does; a client command prints its result and only warns.
    let default_level = match (&cli.command, cli.quiet, cli.verbose) {
        (_, true, _) => "error",
        (_, _, 1) => "info",
        (_, _, 2) => "debug",
        (_, _, 3..) => "trace",
        (Command::Node(_) | Command::Simulate(_), ..) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    quickstore::files::cli::set_quiet(cli.quiet);
    match cli.command {
        Command::Simulate(args) => args.run(),
        Command::Keygen { network } => {
            let key = quickstore::network_key::generate(&network)?;
            println!(
                "wrote {} (fingerprint {}): give it to every node and client of the network \
                 (--network-key), and to nobody else",
                network.display(),
                key.fingerprint()
            );
            Ok(())
        }
        Command::Node(args) => runtime()?.block_on(args.run()),
        Command::Status(args) => runtime()?.block_on(args.run()),
        Command::Put(args) => runtime()?.block_on(args.run()),
        Command::Get(args) => runtime()?.block_on(args.run()),
        Command::Rm(args) => runtime()?.block_on(args.run()),
        Command::Ls(args) => runtime()?.block_on(args.run()),
        Command::Grant(args) => runtime()?.block_on(args.run()),
        Command::Id(args) => args.run(),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "quickstore",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
