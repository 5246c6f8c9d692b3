//! Positions in a topic's history.

use serde::{Deserialize, Serialize};

/// A position in a topic's history: the epoch names one incarnation of the
/// history, the offset counts publications within it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    pub epoch: String,
    pub offset: u64,
}
