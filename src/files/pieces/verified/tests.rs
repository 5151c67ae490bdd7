use std::io::Write as _;

use super::*;

/// Deterministic bytes that differ in every chunk group.
fn data(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect()
}

/// A blob file of `bytes` and its outboard, in `dir`.
fn stored(dir: &Path, bytes: &[u8]) -> (RangeReader, PreOrderOutboard<File>) {
    let blob = dir.join("blob");
    std::fs::File::create(&blob)
        .and_then(|mut f| f.write_all(bytes))
        .expect("blob written");
    let root = *blake3::hash(bytes).as_bytes();
    let outboard =
        open_outboard(&blob, &dir.join("ob"), bytes.len() as u64, &root).expect("an outboard");
    let reader = RangeReader::open(&blob, bytes.len() as u64).expect("blob");
    (reader, outboard)
}

/// Decodes `encoded` as `piece` into a window buffer.
fn decode(root: &[u8; 32], size: u64, piece: Piece, encoded: &[u8]) -> Result<Vec<u8>, PieceError> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("out"))
        .expect("out");
    decode_piece(root, size, piece, encoded, &mut FileAt(&file))?;
    let all = std::fs::read(dir.path().join("out")).expect("read back");
    Ok(all
        .get(piece.start as usize..)
        .map(<[u8]>::to_vec)
        .unwrap_or_default())
}

#[test]
fn every_piece_of_blobs_of_awkward_sizes_round_trips() {
    for size in [
        1usize,
        1024,
        16 * 1024,
        16 * 1024 + 1,
        (1 << 20) + 123,
        5 << 20,
    ] {
        let bytes = data(size);
        let dir = tempfile::tempdir().expect("a temp dir");
        let (blob, outboard) = stored(dir.path(), &bytes);
        let root = *blake3::hash(&bytes).as_bytes();
        for piece in pieces_of(size as u64, 1 << 20) {
            let mut encoded = Vec::new();
            encode_piece(&blob, &outboard, piece, &mut encoded).expect("encoded");
            assert!(
                encoded.len() as u64 <= piece.max_encoded_len(),
                "size {size}"
            );
            let got = decode(&root, size as u64, piece, &encoded).expect("verifies");
            assert_eq!(
                got,
                bytes[piece.start as usize..piece.end as usize],
                "size {size}"
            );
        }
    }
}

#[test]
fn the_outboard_costs_64_bytes_per_chunk_group_pair() {
    // 64 chunk groups of 16 KiB: 63 hash pairs, 3.9 KiB per MiB.
    assert_eq!(outboard_len(1 << 20), 63 * 64);
    assert_eq!(outboard_len(16 * 1024), 0);
}

#[test]
fn a_flipped_byte_anywhere_in_an_encoding_is_refused() {
    let bytes = data(300 * 1024);
    let dir = tempfile::tempdir().expect("a temp dir");
    let (blob, outboard) = stored(dir.path(), &bytes);
    let root = *blake3::hash(&bytes).as_bytes();
    let piece = Piece {
        start: 64 * 1024,
        end: 128 * 1024,
    };
    let mut encoded = Vec::new();
    encode_piece(&blob, &outboard, piece, &mut encoded).expect("encoded");
    for at in [0, 63, 64, 200, encoded.len() / 2, encoded.len() - 1] {
        let mut bad = encoded.clone();
        bad[at] ^= 1;
        assert!(
            matches!(
                decode(&root, bytes.len() as u64, piece, &bad),
                Err(PieceError::BadProof(_))
            ),
            "byte {at}"
        );
    }
    let short = &encoded[..encoded.len() - 1];
    assert!(decode(&root, bytes.len() as u64, piece, short).is_err());
    let mut long = encoded.clone();
    long.push(0);
    assert!(decode(&root, bytes.len() as u64, piece, &long).is_err());
    let other_root = *blake3::hash(b"other").as_bytes();
    assert!(decode(&other_root, bytes.len() as u64, piece, &encoded).is_err());
}

#[test]
fn a_blob_that_rotted_on_disk_serves_pieces_that_fail_and_gets_no_outboard() {
    let mut bytes = data(200 * 1024);
    let dir = tempfile::tempdir().expect("a temp dir");
    let (blob, outboard) = stored(dir.path(), &bytes);
    let root = *blake3::hash(&bytes).as_bytes();
    // The blob changes on disk after its outboard was made.
    bytes[100 * 1024] ^= 0xff;
    std::fs::write(dir.path().join("blob"), &bytes).expect("rewritten");
    let piece = Piece {
        start: 96 * 1024,
        end: 112 * 1024,
    };
    let mut encoded = Vec::new();
    encode_piece(&blob, &outboard, piece, &mut encoded).expect("encoded unchecked");
    assert!(decode(&root, bytes.len() as u64, piece, &encoded).is_err());
    // A fresh outboard of the rotten blob does not reach the tuple's hash.
    let made = open_outboard(
        &dir.path().join("blob"),
        &dir.path().join("ob2"),
        200 * 1024,
        &root,
    );
    assert!(matches!(made, Err(PieceError::CorruptBlob)));
    assert!(!dir.path().join("ob2").exists());
}

#[test]
fn only_aligned_bounded_ranges_inside_the_blob_are_pieces() {
    let size = 10 << 20;
    let ok = Piece {
        start: 16 * 1024,
        end: 32 * 1024,
    };
    assert!(ok.check(size).is_ok());
    for (start, end) in [
        (1, 16 * 1024),
        (0, 1000),
        (0, 0),
        (32 * 1024, 16 * 1024),
        (0, (4 << 20) + 16 * 1024),
        (size - 16 * 1024, size + 16 * 1024),
    ] {
        assert!(Piece { start, end }.check(size).is_err(), "{start}..{end}");
    }
    // The blob's end closes the last piece wherever it falls.
    assert!(
        Piece {
            start: 16 * 1024,
            end: 20_000
        }
        .check(20_000)
        .is_ok()
    );
}

#[test]
fn pieces_cover_a_blob_once_in_whole_chunk_groups() {
    let size = (3 << 20) + 5;
    let pieces = pieces_of(size, 1_000_000);
    assert_eq!(pieces[0].start, 0);
    assert_eq!(pieces.last().map(|p| p.end), Some(size));
    for pair in pieces.windows(2) {
        assert_eq!(pair[0].end, pair[1].start);
        assert_eq!(pair[0].len() % GROUP_BYTES, 0);
    }
    assert!(pieces_of(0, 1 << 20).is_empty());
}
