//! Prometheus metrics at `/metrics`: libp2p's own plus the Kelips view.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use quickstore_behaviours::Event;
use quickstore_behaviours::net::{Behaviour as KelipsBehaviour, Peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::blobs::BlobStore;
use crate::files::service::{FilesCounters, FilesService};

/// Scrapes served at once.
const MAX_SCRAPES: usize = 8;

/// The node's own metrics.
#[derive(Clone, Default)]
pub struct NodeMetrics {
    view_size: Gauge,
    view_failed: Gauge,
    contacts: Gauge,
    failures_detected: Counter,
    members_removed: Counter,
    joins: Counter,
    refused_messages: Counter,
    gossip_bytes_in: Counter,
    gossip_bytes_out: Counter,
    storage_used: Gauge,
    storage_free: Gauge,
    files: Vec<(&'static str, Counter)>,
}

impl NodeMetrics {
    /// Registers the node's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("kelips");
        r.register(
            "view_size",
            "Members in the group view",
            m.view_size.clone(),
        );
        r.register(
            "view_failed",
            "Members marked failed",
            m.view_failed.clone(),
        );
        r.register("contacts", "Contacts over all groups", m.contacts.clone());
        r.register(
            "failures_detected",
            "Members marked failed",
            m.failures_detected.clone(),
        );
        r.register(
            "members_removed",
            "Members removed after T_cleanup",
            m.members_removed.clone(),
        );
        r.register("joins", "Joins completed", m.joins.clone());
        r.register(
            "refused_messages",
            "Messages refused here",
            m.refused_messages.clone(),
        );
        r.register(
            "gossip_bytes_in",
            "Kelips frame bytes received",
            m.gossip_bytes_in.clone(),
        );
        r.register(
            "gossip_bytes_out",
            "Kelips frame bytes sent",
            m.gossip_bytes_out.clone(),
        );
        let r = registry.sub_registry_with_prefix("files");
        r.register(
            "storage_used_bytes",
            "Bytes of stored blobs",
            m.storage_used.clone(),
        );
        r.register(
            "storage_free_bytes",
            "Bytes of blob storage free",
            m.storage_free.clone(),
        );
        let mut m = m;
        for (name, _) in FilesCounters::default().snapshot() {
            let counter = Counter::default();
            r.register(
                name,
                format!("File protocols: {}", name.replace('_', " ")),
                counter.clone(),
            );
            m.files.push((name, counter));
        }
        m
    }

    /// Refreshes the file gauges and counters.
    pub fn update_files(&self, files: &FilesService, blobs: &BlobStore) {
        self.storage_used.set(blobs.used() as i64);
        self.storage_free
            .set(blobs.free().min(i64::MAX as u64) as i64);
        for ((_, counter), (_, total)) in self.files.iter().zip(files.counters.snapshot()) {
            catch_up(counter, total);
        }
    }

    /// Counts an event of the core.
    pub fn on_core_event(&self, event: &Event<Peer>) {
        match event {
            Event::MemberFailed(_) => {
                self.failures_detected.inc();
            }
            Event::MemberRemoved(_) => {
                self.members_removed.inc();
            }
            Event::Joined { .. } => {
                self.joins.inc();
            }
            _ => {}
        }
    }

    /// Refreshes gauges and byte counters from the behaviour.
    pub fn update(&self, kelips: &KelipsBehaviour) {
        let core = kelips.core();
        let failed = core.view().iter().filter(|m| m.failed).count();
        self.view_size.set(core.view().iter().count() as i64);
        self.view_failed.set(failed as i64);
        self.contacts.set(core.contacts().len() as i64);
        let (bytes_in, bytes_out) = kelips.wire_bytes();
        catch_up(&self.gossip_bytes_in, bytes_in);
        catch_up(&self.gossip_bytes_out, bytes_out);
        catch_up(&self.refused_messages, kelips.stats().refused_in);
    }
}

fn catch_up(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

/// Binds the metrics address; an address in use is refused naming it. The node binds it
/// before anything else starts (and logs), so that this failure is the only line it prints.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))
}

/// Serves `registry` as Prometheus text on `listener` (`GET /metrics`, see [`bind`]);
/// returns the bound address.
pub fn serve(listener: TcpListener, registry: Arc<Registry>) -> anyhow::Result<SocketAddr> {
    let bound = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    let mut head = vec![0u8; 4096];
                    let n = socket.read(&mut head).await?;
                    let head = String::from_utf8_lossy(&head[..n]);
                    let response = if head.starts_with("GET /metrics ") {
                        let mut body = String::new();
                        if encode(&mut body, &registry).is_err() {
                            body.clear();
                        }
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    };
                    socket.write_all(response.as_bytes()).await?;
                    socket.shutdown().await
                })
                .await;
            });
        }
    });
    Ok(bound)
}
