//! Older versions on the control protocol: `version` and `has_version` find the members that
//! keep one version of a name (for `get --version`), `versions` and `kept` list every version
//! the members keep (for `ls --versions`). Each holder remembers its own history
//! ([`super::versions`]); a member of the name's group asks the others, at most
//! [`MAX_GROUP_ASKED`] of them, and merges their answers.

use std::collections::BTreeMap;

use quickstore_behaviours::net::Peer;
use quickstore_behaviours::tuple::check_name;
use quickstore_behaviours::{FileTuple, Version};

use super::service::{FilesService, MAX_GROUP_ASKED, files_request, gone, refused};
use super::wire::{FilesRequest, FilesResponse, MAX_VERSIONS_LISTED, PeerInfo, WireError};

impl FilesService {
    /// This node's answer to `has_version`: the version with itself as holder, or not found.
    pub(super) fn has_version(&self, name: &str, lamport: u64) -> FilesResponse {
        let kept = self.kept.lock().ok().and_then(|k| k.find(name, lamport));
        match kept {
            Some(version) => FilesResponse::Located {
                tuple: FileTuple {
                    name: name.into(),
                    version: Version {
                        lamport,
                        blake3: version.blake3,
                    },
                    size: version.size,
                    holders: vec![Peer(self.handle.me)],
                    epoch: 0,
                    deleted: false,
                    auth: None,
                },
                holders: Vec::new(),
                hops: 0,
            },
            None => FilesResponse::NotFound,
        }
    }

    /// Finds the members of the name's group that keep version `lamport`.
    pub(super) async fn find_version(
        &self,
        name: String,
        lamport: u64,
        forwarded: bool,
    ) -> Result<FilesResponse, WireError> {
        if let Err(e) = check_name(&name) {
            return Ok(refused(e));
        }
        let place = self.handle.place_now();
        let group = place.group_of(&name);
        if group != place.group {
            let request = FilesRequest::Version {
                name,
                lamport,
                forwarded: true,
            };
            return self.forward(group, forwarded, request).await;
        }
        let request = FilesRequest::HasVersion {
            name: name.clone(),
            lamport,
        };
        let own = self.has_version(&name, lamport);
        let found: Vec<(FileTuple<Peer>, PeerInfo)> = self
            .ask_members(request, own)
            .await?
            .into_iter()
            .filter_map(|(member, answer)| match answer {
                FilesResponse::Located { tuple, .. } => Some((tuple, member)),
                _ => None,
            })
            .collect();
        let Some((first, _)) = found.first() else {
            return Ok(FilesResponse::NotFound);
        };
        let mut tuple = first.clone();
        let holders: Vec<PeerInfo> = found
            .iter()
            .filter(|(t, _)| t.version == first.version)
            .map(|(_, info)| info.clone())
            .collect();
        tuple.holders = holders.iter().map(|h| h.peer).collect();
        tuple.holders.sort();
        Ok(FilesResponse::Located {
            tuple,
            holders,
            hops: 1,
        })
    }

    /// This node's answer to `kept`: the versions of `name` it keeps, itself as holder.
    pub(super) fn kept_of(&self, name: &str) -> FilesResponse {
        let versions = self
            .kept
            .lock()
            .map(|k| k.of(name).to_vec())
            .unwrap_or_default();
        FilesResponse::KeptVersions {
            versions: versions
                .into_iter()
                .take(MAX_VERSIONS_LISTED)
                .map(|v| FileTuple {
                    name: name.into(),
                    version: Version {
                        lamport: v.lamport,
                        blake3: v.blake3,
                    },
                    size: v.size,
                    holders: vec![Peer(self.handle.me)],
                    epoch: 0,
                    deleted: false,
                    auth: None,
                })
                .collect(),
        }
    }

    /// Every version of `name` the members of its group keep, newest first, each with the
    /// members that keep it.
    pub(super) async fn versions(
        &self,
        name: String,
        forwarded: bool,
    ) -> Result<FilesResponse, WireError> {
        if let Err(e) = check_name(&name) {
            return Ok(refused(e));
        }
        let place = self.handle.place_now();
        let group = place.group_of(&name);
        if group != place.group {
            let request = FilesRequest::Versions {
                name,
                forwarded: true,
            };
            return self.forward(group, forwarded, request).await;
        }
        let request = FilesRequest::Kept { name: name.clone() };
        let answers = self.ask_members(request, self.kept_of(&name)).await?;
        // (Lamport, BLAKE3) → the version, its holders merged.
        let mut merged: BTreeMap<(u64, [u8; 32]), FileTuple<Peer>> = BTreeMap::new();
        for (_, answer) in answers {
            let FilesResponse::KeptVersions { versions } = answer else {
                continue;
            };
            for version in versions.into_iter().take(MAX_VERSIONS_LISTED) {
                if version.name.as_ref() != name {
                    continue;
                }
                let key = (version.version.lamport, version.version.blake3);
                let entry = merged.entry(key).or_insert_with(|| FileTuple {
                    holders: Vec::new(),
                    ..version.clone()
                });
                for holder in version.holders {
                    if !entry.holders.contains(&holder) {
                        entry.holders.push(holder);
                    }
                }
            }
        }
        let mut versions: Vec<FileTuple<Peer>> = merged.into_values().rev().collect();
        versions.truncate(MAX_VERSIONS_LISTED);
        for version in &mut versions {
            version.holders.sort();
        }
        Ok(FilesResponse::KeptVersions { versions })
    }

    /// Asks the live members of the own group (at most [`MAX_GROUP_ASKED`]) `request` at
    /// once, answering for this node with `own`; a member that fails counts as `not_found`.
    async fn ask_members(
        &self,
        request: FilesRequest,
        own: FilesResponse,
    ) -> Result<Vec<(PeerInfo, FilesResponse)>, WireError> {
        let (members, _) = self
            .handle
            .place(0, Vec::new(), MAX_GROUP_ASKED)
            .await
            .map_err(gone)?;
        let (request, own) = (&request, &own);
        let asked = members.into_iter().map(|member| async move {
            let answer = if member.peer.0 == self.handle.me {
                own.clone()
            } else {
                files_request(&self.control, member.peer.0, request, self.timeouts.io)
                    .await
                    .unwrap_or(FilesResponse::NotFound)
            };
            (member, answer)
        });
        Ok(futures::future::join_all(asked).await)
    }
}
