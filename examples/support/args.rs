//! The benchmark examples' command line: `--name value` pairs with numeric values, no parser
//! needed. Included by each example with `#[path = "support/args.rs"] mod args;`.

/// The number after `name` on the command line, or `default` when it is absent or not a
/// number.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
