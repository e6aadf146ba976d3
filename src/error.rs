//! paxkv's one error type.
//!
//! Three families, kept apart because callers must treat them differently:
//! - **retryable**: the cluster could not answer now (no quorum, contention, a busy node); the
//!   request did not take effect ([`Error::Unavailable`], [`Error::Busy`]), or may have
//!   ([`Error::Unknown`]), in which case only a retry with the same write id is safe;
//! - **bad input**: the request, a frame or the configuration is wrong; retrying fails the same
//!   way ([`Error::BadRequest`], [`Error::Frame`], [`Error::Config`]);
//! - **storage faults**: LMDB failed. Inside an acceptor this is fatal for that acceptor: it
//!   never turns into a reply that claims durability; the actor stops and is restarted from
//!   what is on disk.

use crate::messages::ErrorReply;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("outcome unknown: {0}")]
    Unknown(String),
    #[error("busy: {0}")]
    Busy(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("malformed frame: {0}")]
    Frame(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The error as a client sees it on the wire.
    pub fn to_reply(&self) -> ErrorReply {
        match self {
            Error::Unavailable(m) => ErrorReply::Unavailable(m.clone()),
            Error::Unknown(m) => ErrorReply::Unknown(m.clone()),
            Error::Busy(m) => ErrorReply::Busy(m.clone()),
            Error::BadRequest(m) | Error::Frame(m) | Error::Config(m) => {
                ErrorReply::BadRequest(m.clone())
            }
            // A storage fault was not a success; whether the write landed elsewhere is not
            // known to this node.
            Error::Storage(m) => ErrorReply::Unknown(format!("storage fault: {m}")),
            Error::Io(e) => ErrorReply::Unavailable(e.to_string()),
        }
    }
}

impl From<ErrorReply> for Error {
    fn from(reply: ErrorReply) -> Error {
        match reply {
            ErrorReply::Unavailable(m) => Error::Unavailable(m),
            ErrorReply::Unknown(m) => Error::Unknown(m),
            ErrorReply::BadRequest(m) => Error::BadRequest(m),
            ErrorReply::Busy(m) => Error::Busy(m),
        }
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
