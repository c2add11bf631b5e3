//! The Noise protocol this crate speaks, in one place: the handshake (`secure`) and node
//! keys (`identity`) both build on it.

use crate::NetError;

/// The Noise pattern of every session (docs/protocol.md, section 2).
pub(crate) const PATTERN: &str = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2s";
/// The prologue both sides mix in; unchanged since protocol version 2.
pub(crate) const PROLOGUE: &[u8] = b"cbddc/2";

/// A builder for this protocol's Noise states (and its key pairs).
pub(crate) fn builder() -> Result<snow::Builder<'static>, NetError> {
    let params = PATTERN.parse().map_err(|e| NetError::Handshake {
        detail: format!("noise parameters: {e}"),
    })?;
    snow::Builder::new(params)
        .prologue(PROLOGUE)
        .map_err(|e| NetError::Handshake {
            detail: format!("noise setup: {e}"),
        })
}
