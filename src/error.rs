//! paxkv's one error type, used by the core, the runtime, the wire, the client and the CLI.
//!
//! [`Error`] is plain data (`Clone`, serde): a node sends it to a client as it is, inside
//! `messages::ClientResponse`, and the client hands the same value to its caller. What a
//! caller must do with it is decided in one place, [`Error::class`]:
//! - [`ErrorClass::Retry`]: the cluster could not answer now (no quorum, contention, a busy
//!   node) and the request **did not** take effect. Retry, here or elsewhere.
//! - [`ErrorClass::MayHaveApplied`]: the request may or may not have taken effect. Only a
//!   retry with the same write id is safe (the register then answers the first outcome).
//! - [`ErrorClass::BadInput`]: the request, a frame or the configuration is wrong; retrying
//!   fails the same way.
//! - [`ErrorClass::Storage`]: LMDB failed. Inside an acceptor this is fatal for that acceptor:
//!   it never turns into a reply that claims durability; the actor stops and is restarted from
//!   what is on disk. Seen by a client, the request's outcome is not known (as for
//!   `MayHaveApplied`), and the message names the node and the cause (a full disk, say).
//!
//! **postcard encodes variants by index: add new variants at the end.** The first four are
//! the ones clients have always received (`tests/wire.rs` pins them).

use serde::{Deserialize, Serialize};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    /// No quorum before the deadline, and the request certainly did not take effect.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request may or may not have taken effect (an Accept was sent but no quorum
    /// answered before the deadline).
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The request is malformed or over a limit.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The node is over a limit (live keys, requests in flight): retry later or elsewhere.
    #[error("busy: {0}")]
    Busy(String),
    /// A frame that does not decode, is over the size limit, or contradicts the protocol.
    #[error("malformed frame: {0}")]
    Frame(String),
    /// The configuration is invalid; the message names the field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// LMDB failed (a full disk or map, an IO error, a record that fails its checks).
    #[error("storage: {0}")]
    Storage(String),
    /// An operating-system IO error outside storage (sockets, files, processes).
    #[error("io: {0}")]
    Io(String),
    /// This node cannot serve the request (its store is refused, it is no member, it does
    /// not vote), and nothing was done; another node may. Clients move on to the next node.
    #[error("not this node: {0}")]
    NotThisNode(String),
    /// What the request names does not exist (a lease), and nothing was done.
    #[error("not found: {0}")]
    NotFound(String),
}

/// What a caller may do after an [`Error`]; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Retry,
    MayHaveApplied,
    BadInput,
    Storage,
}

impl Error {
    /// The one classifier: client, CLI and benchmark all decide by it.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Unavailable(_) | Error::Busy(_) | Error::Io(_) | Error::NotThisNode(_) => {
                ErrorClass::Retry
            }
            Error::Unknown(_) => ErrorClass::MayHaveApplied,
            Error::BadRequest(_) | Error::Frame(_) | Error::Config(_) | Error::NotFound(_) => {
                ErrorClass::BadInput
            }
            Error::Storage(_) => ErrorClass::Storage,
        }
    }

    /// May the request have taken effect? (Only a retry with the same write id is safe.)
    pub fn may_have_applied(&self) -> bool {
        matches!(
            self.class(),
            ErrorClass::MayHaveApplied | ErrorClass::Storage
        )
    }

    /// The error's message, without the class prefix of its `Display`.
    pub fn message(&self) -> &str {
        match self {
            Error::Unavailable(m)
            | Error::Unknown(m)
            | Error::BadRequest(m)
            | Error::Busy(m)
            | Error::Frame(m)
            | Error::Config(m)
            | Error::Storage(m)
            | Error::Io(m)
            | Error::NotThisNode(m)
            | Error::NotFound(m) => m,
        }
    }

    /// Is the request itself wrong, so that a retry would fail the same way?
    pub fn is_bad_input(&self) -> bool {
        self.class() == ErrorClass::BadInput
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e.to_string())
    }
}

impl From<heed::Error> for Error {
    fn from(e: heed::Error) -> Error {
        Error::Storage(e.to_string())
    }
}

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Error {
        Error::Frame(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_one_class() {
        let cases = [
            (Error::Unavailable("x".into()), ErrorClass::Retry),
            (Error::Busy("x".into()), ErrorClass::Retry),
            (Error::Io("x".into()), ErrorClass::Retry),
            (Error::NotThisNode("x".into()), ErrorClass::Retry),
            (Error::Unknown("x".into()), ErrorClass::MayHaveApplied),
            (Error::BadRequest("x".into()), ErrorClass::BadInput),
            (Error::Frame("x".into()), ErrorClass::BadInput),
            (Error::Config("x".into()), ErrorClass::BadInput),
            (Error::Storage("x".into()), ErrorClass::Storage),
        ];
        for (error, class) in cases {
            assert_eq!(error.class(), class, "{error}");
            assert_eq!(
                error.may_have_applied(),
                matches!(class, ErrorClass::MayHaveApplied | ErrorClass::Storage)
            );
        }
    }
}
