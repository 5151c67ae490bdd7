//! What the file commands print: [`FileReport`] (text or `--json`), sizes in human units,
//! names escaped so that one name is one line.

use std::time::Instant;

use quickstore_behaviours::FileTuple;
use quickstore_behaviours::net::Peer;
use serde::Serialize;

use super::session::Session;
use crate::blobs::to_hex;

/// What `put` and `get` print with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The name.
    pub name: String,
    /// The version's Lamport counter.
    pub version: u64,
    /// Bytes.
    pub size: u64,
    /// BLAKE3 (hex).
    pub blake3: String,
    /// Holders' PeerIds.
    pub holders: Vec<String>,
    /// Copies that exist: the number of holders.
    pub copies: u32,
    /// Copies the network keeps of a file (R), when the entry node said (put).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wanted: Option<u32>,
    /// Why there are fewer copies than wanted (put).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fewer_because: Option<String>,
    /// Wall time of the command, in milliseconds.
    pub elapsed_ms: u64,
    /// Where the bytes were written (get; `-` for standard output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Kelips lookup rounds the entry node needed (get).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hops: Option<u32>,
    /// Live members of the name's group, when fewer than the replication (put).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_size: Option<u32>,
    /// How the bytes went between the client and the node it streamed with: `direct`
    /// (perhaps after hole punching) or `relay`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
    /// Milliseconds from asking for a connection to that node to a usable one (dial, relay,
    /// hole punching).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
    /// The target already held these bytes: nothing was transferred (get).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
    /// The name's owner (the writer identity's PeerId) when the version is signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Who wrote this version, when not the owner (under the owner's grant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// The holders a get asked for pieces, with what each served (get, into a file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<SourceReport>>,
    /// Verified bytes kept from an earlier, interrupted get of the same version (get).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_bytes: Option<u64>,
}

/// What one holder served a get.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// Its PeerId.
    pub peer: String,
    /// Verified bytes it delivered first (the file's bytes come from the sources' sum).
    pub bytes: u64,
    /// Pieces it delivered first.
    pub pieces: u32,
    /// It served bytes that failed verification: its pieces were fetched elsewhere.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bad: bool,
    /// Why it was given no more pieces, if it was dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
}

/// A raw key as the PeerId users see (`quickstore id`), or hex if it is no valid key.
pub fn key_shown(key: &quickstore_behaviours::auth::KeyBytes) -> String {
    crate::client_identity::peer_id_of(key)
        .map_or_else(|| quickstore_behaviours::auth::hex(key), |p| p.to_string())
}

impl FileReport {
    /// A report of `tuple`, timed from `started`.
    pub(super) fn of(tuple: &FileTuple<Peer>, started: Instant) -> Self {
        Self {
            name: tuple.name.to_string(),
            version: tuple.version.lamport,
            size: tuple.size,
            blake3: to_hex(&tuple.version.blake3),
            holders: tuple.holders.iter().map(|p| p.to_string()).collect(),
            copies: tuple.holders.len() as u32,
            wanted: None,
            fewer_because: None,
            elapsed_ms: started.elapsed().as_millis() as u64,
            path: None,
            hops: None,
            group_size: None,
            via: None,
            connect_ms: None,
            unchanged: false,
            owner: tuple.auth.as_ref().map(|a| key_shown(&a.owner)),
            writer: tuple
                .auth
                .as_ref()
                .and_then(|a| a.writer.as_ref())
                .map(key_shown),
            sources: None,
            resumed_bytes: None,
        }
    }

    /// Adds how the session's last stream was connected.
    pub(super) fn with_connection(mut self, session: &Session) -> Self {
        if let Ok(last) = session.last_connection.lock()
            && let Some((relayed, ms)) = *last
        {
            self.via = Some(if relayed { "relay" } else { "direct" });
            self.connect_ms = Some(ms);
        }
        self
    }

    /// The copies part of the text: `3 copies`, or `1 copy (3 wanted: …)`.
    fn copies_text(&self) -> String {
        let mut text = count(u64::from(self.copies), "copy", "copies");
        if let Some(wanted) = self.wanted
            && self.copies < wanted
        {
            text.push_str(&format!(" ({wanted} wanted"));
            if let Some(why) = &self.fewer_because {
                text.push_str(&format!(": {why}"));
            }
            text.push(')');
        }
        text
    }

    /// One line of text for `verb` (`stored`, `got`), as `put` and `get` print it.
    pub(super) fn line(&self, verb: &str) -> String {
        let mut line = format!(
            "{verb} {}: {}, version {}, {}, blake3 {}, {} ms",
            shown(&self.name),
            human_size(self.size),
            self.version,
            self.copies_text(),
            self.blake3,
            self.elapsed_ms
        );
        if let Some(path) = &self.path {
            if path == "-" {
                line.push_str(", written to standard output");
            } else if self.unchanged {
                line.push_str(&format!(", {path} already held it"));
            } else {
                line.push_str(&format!(", written to {path}"));
            }
        }
        if let Some(sources) = &self.sources {
            let served = sources.iter().filter(|s| s.bytes > 0).count() as u64;
            line.push_str(&format!(", from {}", count(served, "holder", "holders")));
        }
        if let Some(resumed) = self.resumed_bytes.filter(|r| *r > 0) {
            line.push_str(&format!(" ({} resumed)", human_size(resumed)));
        }
        line
    }

    /// Prints the report: JSON on stdout, or text (on stderr when stdout carries the file).
    pub(super) fn print(&self, json: bool, verb: &str) -> anyhow::Result<()> {
        if json {
            let text = serde_json::to_string(self)?;
            if self.path.as_deref() == Some("-") {
                eprintln!("{text}");
            } else {
                println!("{text}");
            }
        } else if !super::quiet() {
            if self.path.as_deref() == Some("-") {
                eprintln!("{}", self.line(verb));
            } else {
                println!("{}", self.line(verb));
            }
        }
        Ok(())
    }
}

/// `name` as the commands print it: as is when it is plain printable text without
/// surrounding spaces or quotes, else quoted with Rust's escapes (`"a\nb"`), so that a name
/// is always one line and never mistaken for another.
pub fn shown(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| !c.is_control() && c != '"' && c != '\\')
        && name.trim() == name
        && !name.contains("  ");
    if plain {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// Sorted numbers as ranges: `0-2, 5, 7-8`.
pub fn ranges(numbers: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < numbers.len() {
        let mut j = i;
        while j + 1 < numbers.len() && numbers[j + 1] == numbers[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            numbers[i].to_string()
        } else {
            format!("{}-{}", numbers[i], numbers[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

/// `n` and the noun in the fitting number: `1 copy`, `3 copies`, `0 names`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Bytes in binary units with three significant digits: `512 B`, `1.5 KiB`, `250 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let digits = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    format!("{value:.digits$} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.00 KiB");
        assert_eq!(human_size(1536), "1.50 KiB");
        assert_eq!(human_size(100 << 20), "100 MiB");
        assert_eq!(human_size(3 << 30), "3.00 GiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn a_name_prints_as_one_unmistakable_line() {
        assert_eq!(shown("docs/report.pdf"), "docs/report.pdf");
        assert_eq!(shown("my file"), "my file");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown(" lead"), "\" lead\"");
        assert_eq!(shown("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(shown("tab\there"), "\"tab\\there\"");
        assert!(!shown("x\u{1b}[31m").contains('\u{1b}'));
    }

    #[test]
    fn plurals_follow_the_count() {
        assert_eq!(count(1, "copy", "copies"), "1 copy");
        assert_eq!(count(0, "name", "names"), "0 names");
        assert_eq!(count(3, "copy", "copies"), "3 copies");
    }

    #[test]
    fn fewer_copies_than_wanted_are_said_with_the_reason() {
        let mut report = FileReport {
            name: "n".into(),
            version: 1,
            size: 2,
            blake3: "ab".into(),
            holders: vec!["p".into()],
            copies: 1,
            wanted: Some(3),
            fewer_because: Some("group 0 has 1 live node".into()),
            elapsed_ms: 5,
            path: None,
            hops: None,
            group_size: Some(1),
            via: None,
            connect_ms: None,
            unchanged: false,
            owner: None,
            writer: None,
            sources: None,
            resumed_bytes: None,
        };
        assert!(
            report
                .line("stored")
                .contains("1 copy (3 wanted: group 0 has 1 live node)"),
            "{}",
            report.line("stored")
        );
        report.copies = 3;
        assert!(report.line("stored").contains(", 3 copies,"));
    }
}
