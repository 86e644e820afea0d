//! Why an engine call failed.

use dispatch_domain::Rejection;

use crate::store::StoreError;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The domain refused the request; nothing changed.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The store is unreachable; the caller may retry (idempotent calls are safe to retry).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Too many concurrent changes to the same records; retry.
    #[error("contention: {0}")]
    Contention(String),
    /// A bounded resource of this process is used up (e.g. open watches); retry later.
    #[error("{0}")]
    Exhausted(String),
    /// The engine's configuration or rules are invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A bug or corrupt data.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => EngineError::Contention(m),
            StoreError::Unavailable(m) => EngineError::Unavailable(m),
            StoreError::Corrupt(m) => EngineError::Internal(m),
            StoreError::Fenced(m) => EngineError::Unavailable(format!("the store restarted; reconciling ({m})")),
        }
    }
}

/// `<what> <id> not found`, as an engine error.
pub(crate) fn not_found(what: &str, id: &impl std::fmt::Display) -> EngineError {
    EngineError::Rejected(Rejection::not_found(what, id))
}
