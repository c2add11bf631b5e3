//! The control plane's values on the wire: explicit mappings between the membership's
//! types and `cbddc_net::proto`'s control messages (see docs/protocol.md, "Control
//! plane"). OmniPaxos' own messages stay opaque, tagged with their encoding.

use crate::error::ControlPlaneError;
use crate::handover::Handover;
use crate::view::ClusterStatus;
use cbddc_core::NodeId;
use cbddc_election::membership::{Configuration, ControlBody, ControlEntry, ControlFrame};
use cbddc_net::proto;
use std::collections::BTreeMap;

fn malformed(reason: impl Into<String>) -> ControlPlaneError {
    ControlPlaneError::Malformed {
        reason: reason.into(),
    }
}

fn node_id(text: String) -> Result<NodeId, ControlPlaneError> {
    NodeId::new(text.as_str()).map_err(|e| malformed(format!("a member's node id: {e}")))
}

pub fn frame_to_wire(frame: &ControlFrame) -> Result<proto::ControlFrame, ControlPlaneError> {
    let message = serde_json::to_vec(&frame.message)
        .map_err(|e| malformed(format!("cannot encode an OmniPaxos message: {e}")))?;
    Ok(proto::ControlFrame {
        configuration_id: frame.configuration_id,
        encoding: proto::OMNIPAXOS_0_2_JSON,
        message,
    })
}

pub fn frame_from_wire(frame: proto::ControlFrame) -> Result<ControlFrame, ControlPlaneError> {
    if frame.encoding != proto::OMNIPAXOS_0_2_JSON {
        return Err(malformed(format!(
            "a control frame in encoding {}, which this build does not speak (it speaks {}): upgrade the older node",
            frame.encoding,
            proto::OMNIPAXOS_0_2_JSON
        )));
    }
    let message = serde_json::from_slice(&frame.message)
        .map_err(|e| malformed(format!("an unreadable OmniPaxos message: {e}")))?;
    Ok(ControlFrame {
        configuration_id: frame.configuration_id,
        message,
    })
}

/// Frames for the wire; a frame that cannot be encoded is dropped (OmniPaxos resends).
pub fn frames_to_wire(frames: &[ControlFrame]) -> Vec<proto::ControlFrame> {
    frames
        .iter()
        .filter_map(|frame| match frame_to_wire(frame) {
            Ok(wire) => Some(wire),
            Err(e) => {
                tracing::warn!(error = %e, "a control frame was not sent");
                None
            }
        })
        .collect()
}

/// Members' OmniPaxos frames from the wire (checked).
pub fn frames_from_wire(
    frames: Vec<proto::ControlFrame>,
) -> Result<Vec<ControlFrame>, ControlPlaneError> {
    frames.into_iter().map(frame_from_wire).collect()
}

/// A configuration, field by field.
pub fn configuration_to_wire(configuration: &Configuration) -> proto::ClusterConfiguration {
    proto::ClusterConfiguration {
        configuration_id: configuration.configuration_id,
        members: configuration
            .members
            .iter()
            .map(|m| proto::ClusterMember {
                node_id: m.node_id.to_string(),
                pid: m.pid,
                address: m.address.clone(),
                node_key: m.key.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// Rebuilds the configuration from its member list, and refuses one whose pids are not
/// the ones every member derives from that list.
pub fn configuration_from_wire(
    wire: proto::ClusterConfiguration,
) -> Result<Configuration, ControlPlaneError> {
    let mut members = Vec::with_capacity(wire.members.len());
    let mut keys = BTreeMap::new();
    let mut pids = BTreeMap::new();
    for member in wire.members {
        let node = node_id(member.node_id)?;
        if !member.node_key.is_empty() {
            keys.insert(node.clone(), member.node_key);
        }
        pids.insert(node.clone(), member.pid);
        members.push((node, member.address));
    }
    let configuration = Configuration::new(wire.configuration_id, members)
        .map_err(|e| malformed(format!("configuration {}: {e}", wire.configuration_id)))?
        .with_keys(&keys);
    for member in &configuration.members {
        if pids.get(&member.node_id) != Some(&member.pid) {
            return Err(malformed(format!(
                "configuration {} gives {} pid {:?}; members are numbered from 1 in node id order",
                configuration.configuration_id,
                member.node_id,
                pids.get(&member.node_id)
            )));
        }
    }
    Ok(configuration)
}

pub fn entry_to_wire(entry: &ControlEntry) -> proto::ControlEntry {
    proto::ControlEntry {
        proposer: entry.id.0.clone(),
        proposal: entry.id.1,
        body: Some(match &entry.body {
            ControlBody::Data(data) => proto::control_entry::Body::Data(data.clone()),
            ControlBody::Seal { next, metadata } => {
                proto::control_entry::Body::Seal(proto::ControlSeal {
                    next: Some(configuration_to_wire(next)),
                    metadata: metadata.clone(),
                })
            }
        }),
    }
}

pub fn entry_from_wire(wire: proto::ControlEntry) -> Result<ControlEntry, ControlPlaneError> {
    let body = match wire.body {
        Some(proto::control_entry::Body::Data(data)) => ControlBody::Data(data),
        Some(proto::control_entry::Body::Seal(seal)) => ControlBody::Seal {
            next: configuration_from_wire(
                seal.next
                    .ok_or_else(|| malformed("a seal without its next configuration"))?,
            )?,
            metadata: seal.metadata,
        },
        None => return Err(malformed("a control entry without a body")),
    };
    Ok(ControlEntry {
        id: (wire.proposer, wire.proposal),
        body,
    })
}

/// Decided log entries, field by field.
pub fn entries_to_wire(entries: &[ControlEntry]) -> Vec<proto::ControlEntry> {
    entries.iter().map(entry_to_wire).collect()
}

/// Decided log entries from the wire (checked).
pub fn entries_from_wire(
    entries: Vec<proto::ControlEntry>,
) -> Result<Vec<ControlEntry>, ControlPlaneError> {
    entries.into_iter().map(entry_from_wire).collect()
}

pub fn departed_to_wire(departed: &[(NodeId, u32)]) -> Vec<proto::DepartedMember> {
    departed
        .iter()
        .map(|(node, id)| proto::DepartedMember {
            node_id: node.to_string(),
            last_configuration_id: *id,
        })
        .collect()
}

/// The departed members an invitation names (checked).
pub fn departed_from_wire(
    departed: Vec<proto::DepartedMember>,
) -> Result<Vec<(NodeId, u32)>, ControlPlaneError> {
    departed
        .into_iter()
        .map(|d| Ok((node_id(d.node_id)?, d.last_configuration_id)))
        .collect()
}

/// The status a tool asked for.
pub fn status_to_wire(status: &ClusterStatus) -> proto::ClusterStatus {
    proto::ClusterStatus {
        configuration_id: status.configuration_id,
        members: status.members.clone(),
        leader: status.leader.clone().unwrap_or_default(),
        decided_idx: status.decided_idx,
        retired: status.retired,
        retired_after: status.retired_after,
        handover: status
            .handover
            .as_ref()
            .map(|h: &Handover| proto::Handover {
                to_configuration: h.to_configuration,
                pending: h.pending.clone(),
                done: h.done.clone(),
                complete: h.complete,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    fn configuration() -> Configuration {
        Configuration::new(
            3,
            vec![
                (id("b"), "10.0.0.2:1".into()),
                (id("a"), "10.0.0.1:1".into()),
            ],
        )
        .unwrap()
        .with_keys(&BTreeMap::from([(id("a"), "ab".repeat(32))]))
    }

    #[test]
    fn entries_and_configurations_survive_the_wire() {
        let seal = ControlEntry {
            id: ("a".into(), 7),
            body: ControlBody::Seal {
                next: configuration(),
                metadata: Some(vec![1, 2]),
            },
        };
        let data = ControlEntry {
            id: ("b".into(), 1),
            body: ControlBody::Data(b"x".to_vec()),
        };
        let back = entries_from_wire(entries_to_wire(&[seal.clone(), data.clone()])).unwrap();
        assert_eq!(back, vec![seal, data]);
    }

    #[test]
    fn a_configuration_with_pids_of_its_own_is_refused() {
        let mut wire = configuration_to_wire(&configuration());
        wire.members.swap(0, 1);
        assert_eq!(
            configuration_from_wire(wire.clone()).unwrap(),
            configuration(),
            "member order on the wire does not matter"
        );
        wire.members[0].pid = 9;
        let err = configuration_from_wire(wire).unwrap_err();
        assert!(err.to_string().contains("numbered from 1"), "{err}");
    }

    #[test]
    fn a_frame_in_an_unknown_encoding_is_refused_with_what_to_do() {
        let frame = proto::ControlFrame {
            configuration_id: 1,
            encoding: 99,
            message: b"{}".to_vec(),
        };
        let err = frame_from_wire(frame).unwrap_err();
        assert!(err.to_string().contains("upgrade the older node"), "{err}");
        let garbage = proto::ControlFrame {
            configuration_id: 1,
            encoding: proto::OMNIPAXOS_0_2_JSON,
            message: b"not json".to_vec(),
        };
        assert!(matches!(
            frame_from_wire(garbage),
            Err(ControlPlaneError::Malformed { .. })
        ));
    }
}
