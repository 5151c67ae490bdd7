//! `quickstore grant PREFIX PEERID` and `quickstore id`: letting another writer identity
//! write the names under a prefix this identity owns, and showing this identity.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::ProgressBar;
use libp2p::PeerId;
use quickstore_behaviours::auth::{grants_name, sign_grant};
use quickstore_behaviours::limits::MAX_NAME_BYTES;
use serde::Serialize;

use super::put::{PutRules, put_file};
use super::report::shown;
use super::session::Session;
use super::sign::{MAX_GRANTS, encode, read_grants};
use super::{Common, quiet};
use crate::client_identity::{key_of, load_or_create, peer_id};

/// Let another writer identity write every name starting with a prefix that this identity
/// owns (a signed grant, stored in the network).
#[derive(Args, Debug)]
#[command(after_help = "Example:
  quickstore id                                   (on B's machine) prints B's PeerId
  quickstore grant team/ 12D3KooW...              (on A's machine) B may now write team/*")]
pub struct GrantArgs {
    /// The name prefix granted ("" grants every name this identity owns).
    pub prefix: String,
    /// The writer identity granted (its PeerId, as `quickstore id` prints it).
    #[arg(value_name = "PEERID")]
    pub grantee: String,
    #[command(flatten)]
    common: Common,
}

/// What `quickstore grant --json` prints.
#[derive(Debug, Serialize)]
struct Granted {
    prefix: String,
    grantee: String,
    /// The grant list's name in the network.
    list: String,
    /// Grants the list holds now.
    grants: usize,
    /// The prefix was granted already; nothing was written.
    unchanged: bool,
}

impl GrantArgs {
    /// Runs `quickstore grant`.
    pub async fn run(self) -> anyhow::Result<()> {
        if self.prefix.len() > MAX_NAME_BYTES || self.prefix.contains('\0') {
            bail!("refused: a prefix is at most {MAX_NAME_BYTES} bytes without NUL");
        }
        let peer: PeerId = self
            .grantee
            .parse()
            .with_context(|| format!("{:?} is not a PeerId", self.grantee))?;
        let grantee = key_of(&peer)?;
        let session = Session::start(&self.common)?;
        let key = session.identity()?.clone();
        let me = key.public().to_bytes();
        let list = grants_name(&me, &grantee);
        let mut grants = read_grants(&session, &me, &grantee).await?;
        let unchanged = grants.iter().any(|g| g.prefix == self.prefix);
        if !unchanged {
            if grants.len() >= MAX_GRANTS {
                bail!("refused: {peer} holds {MAX_GRANTS} grants already, the most a list holds");
            }
            grants.push(sign_grant(&key, &grantee, &self.prefix));
            let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
            let file = dir.path().join("grants");
            tokio::fs::write(&file, encode(&grants))
                .await
                .with_context(|| format!("cannot write {}", file.display()))?;
            let rules = PutRules {
                deadline: Duration::from_secs(600),
                min_copies: 0,
            };
            put_file(&session, &file, &list, rules, &ProgressBar::hidden()).await?;
        }
        let report = Granted {
            prefix: self.prefix,
            grantee: peer.to_string(),
            list,
            grants: grants.len(),
            unchanged,
        };
        if self.common.json {
            println!("{}", serde_json::to_string(&report)?);
        } else if !quiet() {
            println!(
                "{} {} may write every name starting with {} owned by {}",
                if unchanged { "already:" } else { "granted:" },
                report.grantee,
                shown(&report.prefix),
                peer_id(&key)
            );
        }
        Ok(())
    }
}

/// Print this client's writer identity (its PeerId), making it on first use.
#[derive(Args, Debug)]
pub struct IdArgs {
    /// The identity file. Default: ~/.config/quickstore/client.key.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl IdArgs {
    /// Runs `quickstore id`.
    pub fn run(self) -> anyhow::Result<()> {
        let key = load_or_create(self.identity.as_deref())?;
        let id = peer_id(&key);
        if self.json {
            let path = match &self.identity {
                Some(path) => path.clone(),
                None => crate::client_identity::default_path()?,
            };
            println!(
                "{}",
                serde_json::json!({"peer_id": id.to_string(), "file": path.display().to_string()})
            );
        } else {
            println!("{id}");
        }
        Ok(())
    }
}
