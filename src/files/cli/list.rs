//! `quickstore ls [PREFIX]` and `quickstore rm NAME`.
//!
//! `ls` walks every group through the entry node, page by page. A group that cannot be
//! listed (no node of it is known or reachable, common in a small network) does not stop the
//! walk: the names of every other group are listed, the groups missed are named, and the
//! command exits non-zero because the listing is incomplete.

use std::time::Instant;

use anyhow::{anyhow, bail};
use clap::Args;
use futures::StreamExt;
use quickstore_behaviours::FileTuple;
use quickstore_behaviours::auth::{RESERVED_ROOT, SignedVersion};
use quickstore_behaviours::net::Peer;
use quickstore_behaviours::tuple::check_name;
use serde::Serialize;

use super::report::{count, human_size, ranges, shown};
use super::session::{Session, unexpected};
use super::sign::authority;
use super::{Common, quiet};
use crate::blobs::to_hex;
use crate::files::wire::{FilesRequest, FilesResponse, SignedDelete};

/// List names with their newest version, size and copies.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  quickstore ls                     every name
  quickstore ls albums/2026/        the names under a prefix
  quickstore ls .quickstore/        the grant lists (left out of other listings)
  quickstore ls --json | jq '.names[].name'")]
pub struct LsArgs {
    /// Only names that start with this.
    pub prefix: Option<String>,
    /// Sizes in bytes instead of KiB, MiB, GiB.
    #[arg(long)]
    bytes: bool,
    /// Also the older versions the holders keep (`files.keep_versions`, 1 by default; fetch
    /// one with `get NAME --version V`). One more request per name.
    #[arg(long)]
    versions: bool,
    #[command(flatten)]
    common: Common,
}

/// Delete a name (publishes a tombstone; holders drop the bytes).
#[derive(Args, Debug, Clone)]
#[command(after_help = "Example:
  quickstore rm docs/report.pdf")]
pub struct RmArgs {
    /// The name.
    pub name: String,
    #[command(flatten)]
    common: Common,
}

/// One name of `quickstore ls --json` (and of the HTTP API's listing).
#[derive(Debug, Serialize)]
pub struct Listed {
    name: String,
    version: u64,
    size: u64,
    blake3: String,
    copies: u32,
    holders: Vec<String>,
    /// The owner's PeerId, when the version is signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    /// With `--versions`: the older versions kept, newest first (none when they could not
    /// be asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    older: Option<Vec<Listed>>,
}

impl Listed {
    /// The entry of `t`.
    pub fn of(t: &FileTuple<Peer>) -> Listed {
        Listed {
            name: t.name.to_string(),
            version: t.version.lamport,
            size: t.size,
            blake3: to_hex(&t.version.blake3),
            copies: t.holders.len() as u32,
            holders: t.holders.iter().map(|p| p.to_string()).collect(),
            owner: t.auth.as_ref().map(|a| super::report::key_shown(&a.owner)),
            older: None,
        }
    }
}

/// Requests for older versions in flight at once (`ls --versions`).
const VERSION_QUERIES: usize = 8;

/// The older versions of each of `tuples`, in order: those kept below the listed version, or
/// the reason they could not be asked for.
async fn older_versions(
    session: &Session,
    tuples: &[FileTuple<Peer>],
) -> Vec<Result<Vec<FileTuple<Peer>>, String>> {
    futures::stream::iter(tuples)
        .map(|t| async move {
            let request = FilesRequest::Versions {
                name: t.name.to_string(),
                forwarded: false,
            };
            match session.ask(&request).await {
                Ok(FilesResponse::KeptVersions { versions }) => Ok(versions
                    .into_iter()
                    .filter(|v| v.version.lamport < t.version.lamport)
                    .collect()),
                Ok(other) => Err(format!("{:#}", unexpected(&other, &t.name))),
                Err(e) => Err(format!("{e:#}")),
            }
        })
        .buffered(VERSION_QUERIES)
        .collect()
        .await
}

/// A group `ls` could not list.
#[derive(Debug, Serialize)]
struct Unlisted {
    group: u32,
    reason: String,
}

/// What `quickstore ls --json` prints.
#[derive(Debug, Serialize)]
struct LsReport {
    /// Every name found, sorted.
    names: Vec<Listed>,
    /// Groups that could not be listed: their names are missing.
    unreachable_groups: Vec<Unlisted>,
}

/// Names asked for per page.
const PAGE: u32 = 256;

/// The live names under a prefix, and the groups that could not be listed.
pub(super) struct Listing {
    /// Tuples that are not tombstones, sorted by name.
    pub tuples: Vec<FileTuple<Peer>>,
    /// Groups not listed, with the reason.
    pub unreachable: Vec<(u32, String)>,
}

impl Listing {
    /// `groups 0-2, 5 (first reason)`: the groups as ranges and the first group's reason.
    pub(super) fn describe_unreachable(&self) -> String {
        let groups: Vec<u32> = self.unreachable.iter().map(|(g, _)| *g).collect();
        let first = self
            .unreachable
            .first()
            .map(|(_, why)| format!(" ({why})"))
            .unwrap_or_default();
        let noun = if groups.len() == 1 { "group" } else { "groups" };
        format!("{noun} {}{first}", ranges(&groups))
    }
}

/// Whether a listing under `prefix` shows `name`: names under [`RESERVED_ROOT`] only when
/// `prefix` is under it too.
fn shown_under(name: &str, prefix: &str) -> bool {
    !name.starts_with(RESERVED_ROOT) || prefix.starts_with(RESERVED_ROOT)
}

/// Lists every group through the entry node, keeping the names that start with `prefix`.
pub(super) async fn list_names(session: &Session, prefix: &str) -> anyhow::Result<Listing> {
    let mut listing = Listing {
        tuples: Vec::new(),
        unreachable: Vec::new(),
    };
    let mut groups: Option<u32> = None;
    let mut group = 0;
    let mut after = None;
    while groups.is_none_or(|k| group < k) {
        let request = FilesRequest::List {
            group,
            after: after.clone(),
            limit: PAGE,
            forwarded: false,
        };
        match session.ask(&request).await? {
            FilesResponse::Listing {
                tuples,
                next,
                groups: k,
            } => {
                groups = Some(k);
                listing.tuples.extend(
                    tuples
                        .into_iter()
                        .filter(|t| !t.deleted && t.name.starts_with(prefix))
                        .filter(|t| shown_under(&t.name, prefix)),
                );
                after = next;
                if after.is_none() {
                    group += 1;
                }
            }
            other => {
                let why = format!("{:#}", unexpected(&other, ""));
                tracing::info!("group {group} not listed: {why}");
                listing.unreachable.push((group, why));
                if groups.is_none() {
                    groups = Some(session.groups().await?);
                }
                group += 1;
                after = None;
            }
        }
    }
    listing.tuples.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(listing)
}

impl LsArgs {
    /// Runs `quickstore ls`.
    pub async fn run(self) -> anyhow::Result<()> {
        let session = Session::start(&self.common)?;
        let prefix = self.prefix.clone().unwrap_or_default();
        let listing = list_names(&session, &prefix).await?;
        let older = if self.versions {
            older_versions(&session, &listing.tuples).await
        } else {
            Vec::new()
        };
        let unasked: Vec<(&str, &String)> = listing
            .tuples
            .iter()
            .zip(&older)
            .filter_map(|(t, o)| Some((t.name.as_ref(), o.as_ref().err()?)))
            .collect();
        if self.common.json {
            let report = LsReport {
                names: listing
                    .tuples
                    .iter()
                    .enumerate()
                    .map(|(i, t)| Listed {
                        older: older
                            .get(i)
                            .and_then(|o| o.as_ref().ok())
                            .map(|vs| vs.iter().map(Listed::of).collect()),
                        ..Listed::of(t)
                    })
                    .collect(),
                unreachable_groups: listing
                    .unreachable
                    .iter()
                    .map(|(group, reason)| Unlisted {
                        group: *group,
                        reason: reason.clone(),
                    })
                    .collect(),
            };
            println!("{}", serde_json::to_string(&report)?);
        } else if !quiet() {
            if !listing.tuples.is_empty() {
                println!("{:>10}  {:>7}  {:>6}  NAME", "SIZE", "VERSION", "COPIES");
            }
            for (i, t) in listing.tuples.iter().enumerate() {
                let kept = older.get(i).and_then(|o| o.as_ref().ok());
                for (v, what) in std::iter::once((t, ""))
                    .chain(kept.into_iter().flatten().map(|v| (v, " (older version)")))
                {
                    let size = if self.bytes {
                        v.size.to_string()
                    } else {
                        human_size(v.size)
                    };
                    println!(
                        "{size:>10}  {:>7}  {:>6}  {}{what}",
                        v.version.lamport,
                        v.holders.len(),
                        shown(&t.name)
                    );
                }
            }
            let bytes: u64 = listing.tuples.iter().map(|t| t.size).sum();
            println!(
                "{}, {}",
                count(listing.tuples.len() as u64, "name", "names"),
                if self.bytes {
                    format!("{bytes} bytes")
                } else {
                    human_size(bytes)
                }
            );
        }
        if let Some((name, why)) = unasked.first() {
            bail!(
                "incomplete: the older versions of {} could not be listed: {} ({why})",
                count(unasked.len() as u64, "name", "names"),
                shown(name)
            );
        }
        if !listing.unreachable.is_empty() {
            bail!(
                "incomplete: the names of {} are missing: {} could not be listed",
                count(listing.unreachable.len() as u64, "group", "groups"),
                listing.describe_unreachable()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_lists_are_listed_only_when_asked_for() {
        let list = ".quickstore/grants/aa/bb";
        assert!(!shown_under(list, ""));
        assert!(!shown_under(list, "."));
        assert!(shown_under(list, ".quickstore/"));
        assert!(shown_under(".quickstorex", ""));
        assert!(shown_under("a/b", ""));
    }

    #[test]
    fn missing_groups_read_as_ranges_with_the_first_reason() {
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
        assert_eq!(ranges(&[]), "");
        let listing = Listing {
            tuples: Vec::new(),
            unreachable: vec![(3, "no node".into()), (4, "no node".into())],
        };
        assert_eq!(listing.describe_unreachable(), "groups 3-4 (no node)");
    }
}

/// What `quickstore rm --json` prints.
#[derive(Debug, Serialize)]
pub struct Deleted {
    /// The name.
    pub name: String,
    /// The tombstone's Lamport counter.
    pub version: u64,
    /// Wall time, in milliseconds.
    pub elapsed_ms: u64,
}

/// Deletes `name` through the session's entry node: a tombstone one above the newest
/// version, signed for the name's owner.
pub(super) async fn remove(session: &Session, name: &str) -> anyhow::Result<Deleted> {
    let started = Instant::now();
    check_name(name).map_err(|e| anyhow!("refused: {e}"))?;
    let located = FilesRequest::Locate {
        name: name.to_string(),
    };
    let current = match session.ask(&located).await? {
        FilesResponse::Located { tuple, .. } if !tuple.deleted => tuple,
        FilesResponse::Located { .. } => bail!("not found: {} (deleted)", shown(name)),
        other => return Err(unexpected(&other, name)),
    };
    let owner = current.auth.as_ref().map(|a| a.owner);
    let authority = authority(session, name, owner).await?;
    let lamport = current.version.lamport + 1;
    let tombstone = SignedVersion {
        name,
        lamport,
        blake3: &[0; 32],
        size: 0,
        deleted: true,
    };
    let request = FilesRequest::Delete {
        name: name.to_string(),
        forwarded: false,
        signed: Some(SignedDelete {
            lamport,
            auth: authority.sign(session, tombstone)?,
        }),
    };
    let tuple = match session.ask(&request).await? {
        FilesResponse::Deleted { tuple } => tuple,
        other => return Err(unexpected(&other, name)),
    };
    Ok(Deleted {
        name: tuple.name.to_string(),
        version: tuple.version.lamport,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

impl RmArgs {
    /// Runs `quickstore rm`.
    pub async fn run(self) -> anyhow::Result<()> {
        let session = Session::start(&self.common)?;
        let report = remove(&session, &self.name).await?;
        if self.common.json {
            println!("{}", serde_json::to_string(&report)?);
        } else if !quiet() {
            println!(
                "deleted {} (tombstone version {}), {} ms",
                shown(&report.name),
                report.version,
                report.elapsed_ms
            );
        }
        Ok(())
    }
}
