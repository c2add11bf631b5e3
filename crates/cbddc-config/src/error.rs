use std::path::PathBuf;

/// A configuration could not be loaded or is invalid. The last good configuration (if
/// any) stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not valid TOML/JSON, or has unknown fields or wrong types.
    #[error("configuration file {source_name} cannot be parsed: {message}")]
    Parse {
        /// The file (or other source) name.
        source_name: String,
        /// The parser's message, with the position and field it names.
        message: String,
    },
    /// A field has a value that is not allowed.
    #[error("configuration {source_name}: field `{field}`: {message}")]
    Invalid {
        /// The file (or other source) name.
        source_name: String,
        /// The field, e.g. `known_peers[1].address`.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A running node's source became empty: what a file looks like while it is rewritten.
    #[error(
        "configuration {source_name} is empty; the node keeps the configuration in force (an empty file is what a half-written one looks like: write the whole file, or restart the node to run on the defaults)"
    )]
    Empty {
        /// The file (or other source) name.
        source_name: String,
    },
    /// A field that fixes the node's identity vanished from a running node's source.
    #[error(
        "configuration {source_name}: field `{field}` is in force but missing from this version; a running node never falls back to {fallback}: put the field back (or restart the node to use the default)"
    )]
    Vanished {
        /// The file (or other source) name.
        source_name: String,
        /// `node_id`, `cluster_key` or `data_dir`.
        field: &'static str,
        /// What the node would fall back to.
        fallback: &'static str,
    },
    /// The configuration server could not be used.
    #[error("configuration server {url}: {message}")]
    Remote {
        /// The URL polled.
        url: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// The node id file in the data directory is unusable.
    #[error("node id file {path}: {message}")]
    NodeIdFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}
