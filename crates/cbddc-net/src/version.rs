//! Which protocol a session runs at, which release is on each end, and which formats each
//! side can read (docs/protocol.md, "Versions and upgrades").
//!
//! A release speaks a range of protocol versions, its own and at least the previous
//! release's. The initiator's hello names its range; the responder picks the highest
//! version both speak and says it inside the authenticated handshake, with its release and
//! the formats ("features") it can read. Protocol 4 (release 0.1.0) predates ranges: its
//! hello names one version and its answers carry none of these fields, which is how a
//! newer release recognises it.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// The newest protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 5;
/// The oldest protocol version this build still speaks (the previous release's).
pub const OLDEST_PROTOCOL_VERSION: u32 = 4;
/// This build's release, as peers and tools are told it.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// The release that introduced each protocol version, newest last. A peer that does not
/// say its release (protocol 4 has no field for it) is named by its protocol.
const RELEASES: &[(u32, &str)] = &[(4, "0.1.0"), (5, "0.2.0")];

/// The first release that speaks `protocol`, if this build knows it.
pub fn release_introducing(protocol: u32) -> Option<&'static str> {
    RELEASES
        .iter()
        .find(|(version, _)| *version == protocol)
        .map(|(_, release)| *release)
}

/// The protocol versions one side speaks, oldest to newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolRange {
    oldest: u32,
    newest: u32,
}

impl ProtocolRange {
    /// Every version this build speaks.
    pub const THIS_BUILD: ProtocolRange = ProtocolRange {
        oldest: OLDEST_PROTOCOL_VERSION,
        newest: PROTOCOL_VERSION,
    };

    /// This build's range from `oldest` on: an operator who finished an upgrade refuses
    /// older peers with it (`cbddc run --min-protocol`). `None` outside what this build
    /// speaks.
    pub fn this_build_from(oldest: u32) -> Option<Self> {
        (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION)
            .contains(&oldest)
            .then_some(Self {
                oldest,
                newest: PROTOCOL_VERSION,
            })
    }

    /// What a peer said: its oldest version and its newest, where the newest is 0 for a
    /// peer that names one version only (protocol 4). `None` for nonsense (newest below
    /// oldest, or version 0).
    pub fn said(oldest: u32, newest: u32) -> Option<Self> {
        let newest = if newest == 0 { oldest } else { newest };
        (oldest > 0 && oldest <= newest).then_some(Self { oldest, newest })
    }

    /// What a reject or an answer said: its newest version, and its oldest where 0 means
    /// the same as the newest. Never fails: a version 0 stays 0 and matches nothing.
    pub(crate) fn answered(oldest: u32, newest: u32) -> Self {
        let oldest = if oldest == 0 || oldest > newest {
            newest
        } else {
            oldest
        };
        Self { oldest, newest }
    }

    /// What a hello said: its oldest version, and its newest where 0 (a protocol-4 hello)
    /// or nonsense means the same as the oldest. Never fails, like [`Self::answered`].
    pub(crate) fn hello(oldest: u32, newest: u32) -> Self {
        Self {
            oldest,
            newest: newest.max(oldest),
        }
    }

    /// Whether `version` is in the range.
    pub fn contains(&self, version: u32) -> bool {
        (self.oldest..=self.newest).contains(&version)
    }

    /// The oldest version.
    pub fn oldest(&self) -> u32 {
        self.oldest
    }

    /// The newest version.
    pub fn newest(&self) -> u32 {
        self.newest
    }

    /// The highest version both ranges hold, if any.
    pub fn highest_common(&self, other: &ProtocolRange) -> Option<u32> {
        let highest = self.newest.min(other.newest);
        (highest >= self.oldest.max(other.oldest)).then_some(highest)
    }
}

impl fmt::Display for ProtocolRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.oldest == self.newest {
            write!(f, "protocol {}", self.oldest)
        } else {
            write!(f, "protocols {} to {}", self.oldest, self.newest)
        }
    }
}

/// A side's release as it said it, or as its protocol names it when it did not.
pub fn release_or_inferred(said: &str, range: &ProtocolRange) -> String {
    if !said.is_empty() {
        return said.to_string();
    }
    match release_introducing(range.newest) {
        Some(release) => release.to_string(),
        None => format!("unknown (protocol {})", range.newest),
    }
}

/// The words for two sides with no protocol in common: both releases, both ranges, and
/// which side to upgrade (the one whose newest version is older).
pub fn no_common_protocol(
    ours: &ProtocolRange,
    our_release: &str,
    theirs: &ProtocolRange,
    their_release: &str,
) -> String {
    let advice = if theirs.newest < ours.oldest {
        format!(
            "upgrade the peer to cbddc {} or later",
            release_introducing(ours.oldest).unwrap_or(our_release)
        )
    } else {
        format!("upgrade this node to cbddc {their_release} or later")
    };
    format!(
        "no protocol version in common: this side runs cbddc {our_release} ({ours}), the peer \
         runs cbddc {their_release} ({theirs}); {advice}"
    )
}

/// What the other end of a session said about its build in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerBuild {
    /// The protocol version the session runs at.
    pub protocol: u32,
    /// Its release (inferred from its protocol when it did not say).
    pub release: String,
    /// The formats it says it can read; none for protocol 4.
    pub features: BTreeSet<String>,
}

/// Decides, from what a peer said of its build, whether a session with it may run (a node
/// that writes a format the peer cannot read refuses it), and learns what it said. Called
/// once per handshake with a node, on both sides, before any request.
pub trait FeatureGate: Send + Sync + fmt::Debug {
    /// `Err(message)` refuses the session; the message tells the operator what to do.
    fn admit(&self, peer: &cbddc_core::NodeId, build: &PeerBuild) -> Result<(), String>;
}

/// What this side says of itself in handshakes, and the gate it holds peers to.
#[derive(Debug, Clone)]
pub struct Versions {
    /// The protocol versions it speaks.
    pub protocols: ProtocolRange,
    /// The release it names.
    pub release: String,
    /// The formats it can read.
    pub features: BTreeSet<String>,
    /// Decides on each peer node (`None`: admit every one).
    pub gate: Option<Arc<dyn FeatureGate>>,
}

impl Default for Versions {
    /// This build: its range, its release, the features it reads, no gate.
    fn default() -> Self {
        Self {
            protocols: ProtocolRange::THIS_BUILD,
            release: RELEASE.to_string(),
            features: READABLE_FEATURES.iter().map(|f| f.to_string()).collect(),
            gate: None,
        }
    }
}

/// The formats this build can read. A format is written only once every peer (and every
/// member of a cluster's running configuration) has said it reads it; see the node's
/// feature level.
pub const READABLE_FEATURES: &[&str] = &[FIELD_MERGE];

/// Field-level entries: patches, increments, and puts and deletes that carry the counters
/// their writer saw, merged into documents path by path (docs/protocol.md, "Field
/// entries").
pub const FIELD_MERGE: &str = cbddc_core::field_merge::FEATURE;

#[cfg(test)]
mod tests {
    use super::*;

    fn range(oldest: u32, newest: u32) -> ProtocolRange {
        ProtocolRange::said(oldest, newest).unwrap()
    }

    #[test]
    fn a_session_runs_at_the_highest_version_both_speak() {
        assert_eq!(range(4, 5).highest_common(&range(4, 4)), Some(4));
        assert_eq!(range(4, 5).highest_common(&range(5, 6)), Some(5));
        assert_eq!(range(4, 5).highest_common(&range(4, 7)), Some(5));
        assert_eq!(range(5, 5).highest_common(&range(4, 4)), None);
        assert_eq!(range(6, 7).highest_common(&range(4, 5)), None);
    }

    #[test]
    fn a_protocol_4_hello_names_one_version() {
        assert_eq!(ProtocolRange::said(4, 0), Some(range(4, 4)));
        assert_eq!(ProtocolRange::said(0, 0), None);
        assert_eq!(ProtocolRange::said(6, 5), None);
    }

    #[test]
    fn the_advice_names_both_releases_and_the_side_to_upgrade() {
        let text = no_common_protocol(&range(5, 6), "0.3.0", &range(4, 4), "0.1.0");
        assert!(text.contains("cbddc 0.3.0"), "{text}");
        assert!(text.contains("cbddc 0.1.0"), "{text}");
        assert!(text.contains("upgrade the peer to cbddc 0.2.0"), "{text}");
        let text = no_common_protocol(&range(4, 4), "0.1.0", &range(5, 6), "0.3.0");
        assert!(text.contains("upgrade this node to cbddc 0.3.0"), "{text}");
    }

    #[test]
    fn an_unsaid_release_is_named_by_its_protocol() {
        assert_eq!(release_or_inferred("", &range(4, 4)), "0.1.0");
        assert_eq!(release_or_inferred("0.2.1", &range(4, 5)), "0.2.1");
        assert_eq!(
            release_or_inferred("", &range(9, 9)),
            "unknown (protocol 9)"
        );
    }
}
