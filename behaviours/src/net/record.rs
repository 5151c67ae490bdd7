//! Scoped address records: the standard libp2p peer record (RFC 0003) with two extension
//! fields other implementations skip as unknown protobuf fields, so the record stays readable
//! everywhere while quickstore nodes learn which addresses are LAN-only.
//!
//! ```text
//! PeerRecord  { 1: peer_id bytes, 2: seq uint64,
//!               3: addresses repeated AddressInfo { 1: multiaddr bytes,
//!                                                   1000: scope uint32 (1 = LAN) },
//!               1000: site bytes (4 or 16 bytes: the public IP the node is seen from) }
//! ```
//!
//! A LAN address is dialed only by a node of the same site (both seen from the same public
//! IP, or both with no public IP known, as on one LAN or on loopback): a node elsewhere never
//! dials another site's private addresses. Relayed addresses (`/p2p-circuit`) and public ones
//! are dialed by everybody, LAN first, relayed last. Records without the extension (other
//! implementations, older nodes) have all their addresses dialed.

use std::net::IpAddr;

use libp2p::core::{PeerRecord, SignedEnvelope};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use super::peer::RecordError;
use crate::entry::AddressRecord;

/// Domain of the standard peer record's signature.
pub const RECORD_DOMAIN: &str = "libp2p-peer-record";
/// Payload type of the standard peer record (multicodec 0x0301).
pub const RECORD_PAYLOAD_TYPE: [u8; 2] = [0x03, 0x01];
/// Protobuf field number of the extensions (`scope` in AddressInfo, `site` in PeerRecord).
pub const EXTENSION_FIELD: u64 = 1000;

/// Who may dial an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Reachable from the same LAN (site) only.
    Lan,
    /// Reachable from anywhere (confirmed, configured, or a public interface address).
    Public,
    /// Through a relay (`/p2p-circuit`): anywhere, but slow and limited.
    Relayed,
}

impl Scope {
    /// The scope an address has by its form: circuits are relayed, private, loopback and
    /// shared (CGNAT) IPs are LAN, everything else public.
    pub fn of(address: &Multiaddr) -> Scope {
        if address.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            return Scope::Relayed;
        }
        match first_ip(address) {
            Some(ip) if is_private(ip) => Scope::Lan,
            _ => Scope::Public,
        }
    }
}

/// A verified record's content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopedRecord {
    /// Addresses with their scopes, in the record's order.
    pub addresses: Vec<(Multiaddr, Scope)>,
    /// The public IP the node is seen from, when known.
    pub site: Option<IpAddr>,
    /// Whether the record carried the quickstore extension (else every address is dialed).
    pub scoped: bool,
}

impl ScopedRecord {
    /// The addresses a node at `own_site` should dial, in order: LAN (same site only), public,
    /// relayed.
    pub fn dialable(&self, own_site: Option<IpAddr>) -> Vec<Multiaddr> {
        if !self.scoped {
            return self.addresses.iter().map(|(a, _)| a.clone()).collect();
        }
        let same_site = self.site == own_site;
        let mut out: Vec<(Scope, Multiaddr)> = self
            .addresses
            .iter()
            .filter(|(_, scope)| *scope != Scope::Lan || same_site)
            .map(|(a, s)| (*s, a.clone()))
            .collect();
        out.sort_by_key(|(scope, _)| *scope);
        out.into_iter().map(|(_, a)| a).collect()
    }
}

/// The first IP of an address, if it has one.
pub fn first_ip(address: &Multiaddr) -> Option<IpAddr> {
    address.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Private (RFC 1918, unique local), shared (RFC 6598), loopback, link-local or unspecified.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || ip.is_unspecified()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Signs `addresses` (scopes from [`Scope::of`]) and `site` as `keypair`'s standard peer
/// record with the quickstore extension.
pub fn sign_scoped(
    keypair: &Keypair,
    addresses: &[Multiaddr],
    site: Option<IpAddr>,
) -> Result<AddressRecord, RecordError> {
    let seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let payload = encode_payload(&keypair.public().to_peer_id(), seq, addresses, site);
    let envelope = SignedEnvelope::new(
        keypair,
        RECORD_DOMAIN.into(),
        RECORD_PAYLOAD_TYPE.to_vec(),
        payload,
    )
    .map_err(|e| RecordError(e.to_string()))?;
    AddressRecord::new(envelope.into_protobuf_encoding()).map_err(|e| RecordError(e.to_string()))
}

/// The record's content if it is a valid signed peer record of `peer` (standard format with or
/// without the extension, or rust-libp2p's legacy format).
pub fn verified_record(peer: PeerId, record: &AddressRecord) -> Option<ScopedRecord> {
    let envelope = SignedEnvelope::from_protobuf_encoding(record.as_bytes()).ok()?;
    let (signer, addresses, standard) =
        match PeerRecord::from_signed_envelope_interop(envelope.clone()) {
            Ok(record) => (record.peer_id(), record.addresses().to_vec(), true),
            Err(_) => {
                let legacy = PeerRecord::from_signed_envelope(envelope).ok()?;
                (legacy.peer_id(), legacy.addresses().to_vec(), false)
            }
        };
    if signer != peer {
        return None;
    }
    let extension = standard.then(|| {
        envelope_payload(record)
            .map(|payload| decode_extension(&payload))
            .unwrap_or_default()
    });
    let Some(Some(extension)) = extension else {
        return Some(ScopedRecord {
            addresses: addresses.into_iter().map(|a| (a, Scope::Public)).collect(),
            site: None,
            scoped: false,
        });
    };
    // The standard parser and ours must agree on the addresses; a mismatch means a record
    // crafted to confuse one of them: trust neither extension nor scopes.
    if extension
        .addresses
        .iter()
        .map(|(a, _)| a)
        .ne(addresses.iter())
    {
        return None;
    }
    Some(extension)
}

/// The payload of a record's envelope (already verified by the caller).
fn envelope_payload(record: &AddressRecord) -> Option<Vec<u8>> {
    let envelope = SignedEnvelope::from_protobuf_encoding(record.as_bytes()).ok()?;
    envelope
        .payload_and_signing_key(RECORD_DOMAIN.into(), &RECORD_PAYLOAD_TYPE)
        .ok()
        .map(|(payload, _)| payload.to_vec())
}

fn encode_payload(
    peer: &PeerId,
    seq: u64,
    addresses: &[Multiaddr],
    site: Option<IpAddr>,
) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, &peer.to_bytes());
    put_varint_field(&mut out, 2, seq);
    for address in addresses {
        let mut info = Vec::new();
        put_bytes(&mut info, 1, &address.to_vec());
        if Scope::of(address) == Scope::Lan {
            put_varint_field(&mut info, EXTENSION_FIELD, 1);
        }
        put_bytes(&mut out, 3, &info);
    }
    match site {
        Some(IpAddr::V4(ip)) => put_bytes(&mut out, EXTENSION_FIELD, &ip.octets()),
        Some(IpAddr::V6(ip)) => put_bytes(&mut out, EXTENSION_FIELD, &ip.octets()),
        None => {}
    }
    out
}

/// Our own reading of the payload: `None` when it has no extension field at all (a record
/// of another implementation), `Some(record)` otherwise. Malformed input reads as no extension.
fn decode_extension(payload: &[u8]) -> Option<ScopedRecord> {
    let mut record = ScopedRecord::default();
    let mut extended = false;
    let mut rest = payload;
    while !rest.is_empty() {
        let (field, value, after) = next_field(rest)?;
        rest = after;
        match (field, value) {
            (3, Value::Bytes(info)) => {
                let (address, lan) = decode_address_info(info)?;
                extended |= lan;
                let scope = match Scope::of(&address) {
                    Scope::Relayed => Scope::Relayed,
                    _ if lan => Scope::Lan,
                    _ => Scope::Public,
                };
                record.addresses.push((address, scope));
            }
            (EXTENSION_FIELD, Value::Bytes(site)) => {
                extended = true;
                record.site = match site.len() {
                    4 => <[u8; 4]>::try_from(site).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(site).ok().map(IpAddr::from),
                    _ => return None,
                };
            }
            _ => {}
        }
    }
    record.scoped = true;
    extended.then_some(record)
}

fn decode_address_info(info: &[u8]) -> Option<(Multiaddr, bool)> {
    let mut address = None;
    let mut lan = false;
    let mut rest = info;
    while !rest.is_empty() {
        let (field, value, after) = next_field(rest)?;
        rest = after;
        match (field, value) {
            (1, Value::Bytes(bytes)) => address = Multiaddr::try_from(bytes.to_vec()).ok(),
            (EXTENSION_FIELD, Value::Varint(scope)) => lan = scope == 1,
            _ => {}
        }
    }
    Some((address?, lan))
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// One protobuf field: (number, value, rest). Only wire types 0 and 2 occur in a record.
fn next_field(input: &[u8]) -> Option<(u64, Value<'_>, &[u8])> {
    let (key, rest) = read_varint(input)?;
    match key & 7 {
        0 => {
            let (value, rest) = read_varint(rest)?;
            Some((key >> 3, Value::Varint(value), rest))
        }
        2 => {
            let (len, rest) = read_varint(rest)?;
            let len = usize::try_from(len).ok()?;
            (rest.len() >= len).then(|| (key >> 3, Value::Bytes(&rest[..len]), &rest[len..]))
        }
        _ => None,
    }
}

fn read_varint(input: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in input.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &input[i + 1..]));
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, value: u64) {
    put_varint(out, field << 3);
    put_varint(out, value);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("a multiaddr")
    }

    #[test]
    fn scopes_and_site_round_trip_and_libp2p_still_reads_the_record() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let relay = Keypair::generate_ed25519().public().to_peer_id();
        let addresses = vec![
            addr("/ip4/192.168.1.2/tcp/4001"),
            addr("/ip4/198.51.100.11/udp/4001/quic-v1"),
            addr(&format!("/ip4/198.51.100.1/tcp/1/p2p/{relay}/p2p-circuit")),
        ];
        let site = Some("198.51.100.11".parse().expect("an ip"));
        let record = sign_scoped(&key, &addresses, site).expect("signable");
        let envelope = SignedEnvelope::from_protobuf_encoding(record.as_bytes()).expect("envelope");
        let standard = PeerRecord::from_signed_envelope_interop(envelope).expect("standard");
        assert_eq!(standard.addresses(), &addresses[..]);
        let scoped = verified_record(peer, &record).expect("verifies");
        assert!(scoped.scoped);
        assert_eq!(scoped.site, site);
        let scopes: Vec<Scope> = scoped.addresses.iter().map(|(_, s)| *s).collect();
        assert_eq!(scopes, [Scope::Lan, Scope::Public, Scope::Relayed]);
        // Same site: LAN first. Another site: never the LAN address.
        assert_eq!(scoped.dialable(site), addresses);
        let elsewhere = Some("198.51.100.12".parse().expect("an ip"));
        assert_eq!(scoped.dialable(elsewhere), addresses[1..]);
        assert_eq!(scoped.dialable(None), addresses[1..]);
        assert!(
            verified_record(relay, &record).is_none(),
            "signed by another"
        );
    }

    #[test]
    fn records_without_the_extension_dial_everything() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let addresses = vec![addr("/ip4/10.0.0.2/tcp/1"), addr("/ip4/203.0.113.5/tcp/1")];
        let plain = PeerRecord::new_interop(&key, addresses.clone()).expect("signable");
        let record =
            AddressRecord::new(plain.into_signed_envelope().into_protobuf_encoding()).expect("ok");
        let scoped = verified_record(peer, &record).expect("verifies");
        assert!(!scoped.scoped);
        assert_eq!(
            scoped.dialable(Some("198.51.100.1".parse().expect("ip"))),
            addresses
        );
        // Loopback-only nodes with no site dial each other's loopback addresses.
        let local = sign_scoped(&key, &[addr("/ip4/127.0.0.1/tcp/9")], None).expect("ok");
        let scoped = verified_record(peer, &local).expect("verifies");
        assert_eq!(scoped.dialable(None), vec![addr("/ip4/127.0.0.1/tcp/9")]);
    }

    #[test]
    fn private_ranges() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "fd00::1",
        ] {
            assert!(is_private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["198.51.100.1", "8.8.8.8", "100.128.0.1", "2001:db8::1"] {
            assert!(!is_private(ip.parse().expect("ip")), "{ip}");
        }
    }
}
