//! One error type for every data call.

use crate::bindings::nimbus::data::types::Error as WitError;
use crate::bindings::wasi::keyvalue::store::Error as KvError;

/// Why a data call failed. Each case carries the node's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The function's `uses` does not name the store.
    NotGranted(String),
    /// The app declares no such store.
    NoSuchStore(String),
    /// An item the call needs does not exist.
    NotFound(String),
    /// A version or revision precondition did not hold.
    Conflict(String),
    /// Bad input: a key, id, field path, filter or argument.
    Invalid(String),
    /// A value, document or object over the node's limits.
    TooLarge(String),
    /// The node failed to store or read; nothing was changed.
    Storage(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, message) = match self {
            Error::NotGranted(m) => ("not granted", m),
            Error::NoSuchStore(m) => ("no such store", m),
            Error::NotFound(m) => ("not found", m),
            Error::Conflict(m) => ("conflict", m),
            Error::Invalid(m) => ("invalid", m),
            Error::TooLarge(m) => ("too large", m),
            Error::Storage(m) => ("storage", m),
        };
        write!(f, "{kind}: {message}")
    }
}

impl std::error::Error for Error {}

impl From<WitError> for Error {
    fn from(e: WitError) -> Self {
        match e {
            WitError::NotGranted(m) => Error::NotGranted(m),
            WitError::NoSuchStore(m) => Error::NoSuchStore(m),
            WitError::NotFound(m) => Error::NotFound(m),
            WitError::Conflict(m) => Error::Conflict(m),
            WitError::Invalid(m) => Error::Invalid(m),
            WitError::TooLarge(m) => Error::TooLarge(m),
            WitError::Storage(m) => Error::Storage(m),
        }
    }
}

impl From<KvError> for Error {
    fn from(e: KvError) -> Self {
        match e {
            KvError::NoSuchStore => Error::NoSuchStore("no such key-value store".into()),
            KvError::AccessDenied => Error::NotGranted(
                "the key-value store is not granted to this function (see its `uses`)".into(),
            ),
            KvError::Other(m) => Error::Storage(m),
        }
    }
}
