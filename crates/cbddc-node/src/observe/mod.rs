//! What a node shows about itself: counters and timings (`metrics`), a store wrapper that
//! takes them (`metered`), the node's state as one value (`view`), and the HTTP server
//! that serves `/metrics` and the live cluster page (`http`).

pub(crate) mod http;
pub(crate) mod metered;
pub(crate) mod metrics;
pub(crate) mod view;
