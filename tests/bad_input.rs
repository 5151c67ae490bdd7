//! Bad input against a real node over loopback TCP: random bytes, undecodable and oversized
//! requests, another network's messages and a forged address record. Each is refused with a
//! reason, and the node keeps serving with its view untouched.

use std::io::{self, Read, Write};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, noise, request_response, tcp, yamux,
};
use quickstore::local::LocalNode;
use quickstore_behaviours::codec::{self, Reply};
use quickstore_behaviours::limits::MAX_MESSAGE_BYTES;
use quickstore_behaviours::message::{Hello, HelloKind};
use quickstore_behaviours::net::Peer;
use quickstore_behaviours::net::peer::sign_record;
use quickstore_behaviours::net::protocol::PROTOCOL;
use quickstore_behaviours::{Config, Entry, Envelope, Message, NetworkId};

/// Writes pre-framed bytes as the request; reads the node's reply frame.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Reply;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> io::Result<Vec<u8>> {
        Err(io::Error::other("client only"))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Reply> {
        let mut bytes = Vec::new();
        io.take(4096).read_to_end(&mut bytes).await?;
        // One-byte varint length for replies under 128 bytes, two bytes otherwise.
        let skip = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            2
        } else {
            1
        };
        cbor4ii::serde::from_slice(bytes.get(skip..).unwrap_or_default())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&request).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Reply,
    ) -> io::Result<()> {
        Err(io::Error::other("client only"))
    }
}

fn raw_client(key: Keypair) -> Swarm<request_response::Behaviour<RawCodec>> {
    SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                RawCodec,
                [(PROTOCOL, request_response::ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            )
        })
        .expect("behaviour")
        .build()
}

async fn ask(
    client: &mut Swarm<request_response::Behaviour<RawCodec>>,
    node: PeerId,
    address: &Multiaddr,
    frame: Vec<u8>,
) -> Reply {
    client.add_peer_address(node, address.clone());
    client.behaviour_mut().send_request(&node, frame);
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => return response,
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => {
                    panic!("request failed: {error}")
                }
                _ => {}
            }
        }
    });
    answer.await.expect("an answer in time")
}

fn refused(reply: &Reply) -> &str {
    match reply {
        Reply::Refused(refused) => &refused.reason,
        Reply::Ack => panic!("accepted, expected a refusal"),
    }
}

fn config() -> Config {
    Config {
        network_name: "bad-input".into(),
        // Groups that size themselves, as a node runs by default.
        groups: 0,
        heartbeat_period_ms: 100,
        gossip_period_ms: 100,
        t_fail_ms: 2000,
        t_contact_ms: 8000,
        request_timeout_ms: 1000,
        ..Config::default()
    }
}

fn hello(sender: Entry<Peer>, group_entries: Vec<Entry<Peer>>) -> Message<Peer> {
    Message::Hello(Hello {
        kind: HelloKind::Contact,
        sender,
        group_entries,
        contacts: Vec::new(),
        wanted_groups: Vec::new(),
        ask: Vec::new(),
    })
}

fn entry(id: PeerId, address: quickstore_behaviours::AddressRecord) -> Entry<Peer> {
    Entry {
        id: Peer(id),
        incarnation: 1,
        heartbeat: 1,
        address,
        free_space: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_node_keeps_serving() {
    let node = LocalNode::start(Keypair::generate_ed25519(), config(), Vec::new())
        .await
        .expect("node starts");
    let port = node
        .address
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("tcp port");

    // Random bytes on the TCP port: the connection is dropped.
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = socket.write_all(&junk);
    let mut sink = Vec::new();
    // The node hangs up (EOF or reset) instead of leaving the socket open until our timeout.
    if let Err(e) = socket.read_to_end(&mut sink) {
        assert!(
            !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "the node kept a connection of random bytes open: {e}"
        );
    }
    drop(socket);

    let client_key = Keypair::generate_ed25519();
    let client_id = client_key.public().to_peer_id();
    let mut client = raw_client(client_key.clone());
    // The network id of groups that size themselves is hashed with k = 0.
    let network = NetworkId::new("bad-input", 0);

    // Undecodable.
    let reply = ask(
        &mut client,
        node.peer_id,
        &node.address,
        codec::frame(&[0xff, 0x00, 0x13]),
    )
    .await;
    assert!(refused(&reply).contains("undecodable"), "{reply:?}");

    // Oversized: the length alone is refused, before any body is read.
    let mut oversized = Vec::new();
    codec::put_varint(MAX_MESSAGE_BYTES as u64 + 1, &mut oversized);
    oversized.extend_from_slice(&[0u8; 16]);
    let reply = ask(&mut client, node.peer_id, &node.address, oversized).await;
    assert!(refused(&reply).contains("exceeds"), "{reply:?}");

    // Another network (same name, a fixed k = 3): refused with the reason, view untouched.
    let other = NetworkId::new("bad-input", 3);
    let envelope = Envelope {
        network: other,
        message: hello(entry(client_id, Default::default()), Vec::new()),
        structure: None,
    };
    let reply = ask(
        &mut client,
        node.peer_id,
        &node.address,
        codec::frame(&codec::encode(&envelope).expect("encodes")),
    )
    .await;
    assert!(refused(&reply).contains("wrong network"), "{reply:?}");

    // A forged address record: a third party's entry with a record signed by the client.
    let victim = Keypair::generate_ed25519().public().to_peer_id();
    let forged = sign_record(
        &client_key,
        vec!["/ip4/10.9.8.7/tcp/1".parse().expect("addr")],
    )
    .expect("signs");
    let own = sign_record(
        &client_key,
        vec!["/ip4/127.0.0.1/tcp/9".parse().expect("addr")],
    )
    .expect("signs");
    let envelope = Envelope {
        network,
        message: hello(entry(client_id, own), vec![entry(victim, forged)]),
        structure: None,
    };
    let reply = ask(
        &mut client,
        node.peer_id,
        &node.address,
        codec::frame(&codec::encode(&envelope).expect("encodes")),
    )
    .await;
    assert_eq!(reply, Reply::Ack, "the hello itself is fine");

    // The requests may still be in flight: wait until the node has counted them.
    let mut status = node.status().await.expect("still serving");
    for _ in 0..50 {
        if status.counters["messages_in"] >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = node.status().await.expect("still serving");
    }
    let victim = victim.to_string();
    assert!(
        status.view.iter().all(|m| m.peer_id != victim),
        "forged entry in view"
    );
    assert!(
        status.contacts.values().flatten().all(|c| *c != victim),
        "forged entry among contacts"
    );
    assert!(
        status.counters["refused_items"] >= 1,
        "{:?}",
        status.counters
    );
    assert!(
        status.counters["refused_messages"] >= 3,
        "{:?}",
        status.counters
    );
    node.stop().await;
}

/// Two nodes of different networks: each side refuses the other with the reason, and
/// neither view takes the other in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_network_is_refused_on_both_sides() {
    let a = LocalNode::start(Keypair::generate_ed25519(), config(), Vec::new())
        .await
        .expect("a starts");
    let other = Config {
        network_name: "someone-else".into(),
        ..config()
    };
    let b = LocalNode::start(
        Keypair::generate_ed25519(),
        other,
        vec![(a.peer_id, a.address.clone())],
    )
    .await
    .expect("b starts");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (sa, sb) = (a.status().await.expect("a"), b.status().await.expect("b"));
    assert!(
        sa.counters["refused_messages"] >= 1,
        "a refused nothing: {:?}",
        sa.counters
    );
    assert!(
        sb.counters["refused_by_peers"] >= 1,
        "b was told nothing: {:?}",
        sb.counters
    );
    assert!(sa.view.is_empty() && sa.contacts.is_empty());
    assert!(sb.view.is_empty() && sb.contacts.is_empty());
    a.stop().await;
    b.stop().await;
}
