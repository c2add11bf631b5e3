use crate::ConfigError;
use cbddc_core::NodeId;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;

/// Name of the file in the data directory that keeps a generated node id.
pub const NODE_ID_FILE: &str = "node-id";

/// The node id kept in `data_dir`, generating and storing one on first use.
pub fn resolve_node_id(data_dir: &Path) -> Result<NodeId, ConfigError> {
    let path = data_dir.join(NODE_ID_FILE);
    let fail = |message: String| ConfigError::NodeIdFile {
        path: path.clone(),
        message,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => NodeId::new(text.trim()).map_err(|e| fail(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| fail(format!("cannot create the data directory: {e}")))?;
            let id = generate().map_err(|e| fail(e.to_string()))?;
            std::fs::write(&path, format!("{id}\n"))
                .map_err(|e| fail(format!("cannot write it: {e}")))?;
            Ok(id)
        }
        Err(e) => Err(fail(format!("cannot read it: {e}"))),
    }
}

fn generate() -> Result<NodeId, cbddc_core::CoreError> {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    let name = format!("node-{:012x}", hasher.finish() & 0xffff_ffff_ffff);
    NodeId::new(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_id_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let first = resolve_node_id(&data).unwrap();
        assert!(first.as_str().starts_with("node-"));
        assert_eq!(resolve_node_id(&data).unwrap(), first);
    }

    #[test]
    fn a_tampered_id_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NODE_ID_FILE), "not valid!").unwrap();
        let err = resolve_node_id(dir.path()).unwrap_err();
        assert!(err.to_string().contains("node-id"), "{err}");
    }
}
