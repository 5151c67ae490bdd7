//! Runs the Kelips simulator: joins N nodes, inserts F names, kills a fraction at half time,
//! looks names up throughout, and prints what it measured (`--json` for one object).
//!
//! ```text
//! cargo run --release --example simulate -- --nodes 1000 --groups 32 --files 10000 \
//!     --seconds 120 --loss 0.05 --kill-fraction 0.5 --seed 1 --json
//! ```

use clap::Parser;
use quickstore::simulate::SimulateArgs;

#[derive(Parser, Debug)]
#[command(about = "Simulate a Kelips network deterministically from a seed")]
struct Cli {
    #[command(flatten)]
    args: SimulateArgs,
}

fn main() -> anyhow::Result<()> {
    Cli::parse().args.run()
}

// As the `quickstore` binary: glibc's malloc took about 14% of the simulator's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
