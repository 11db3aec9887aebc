//! The one error type of the native core.
//!
//! Every fallible function outside `rust/py/` returns [`CoreError`]; `rust/py/errors.rs` is the
//! only place that turns it into a Python exception, one variant per exception class.

use thiserror::Error;

/// Text of [`CoreError::Fork`]; also checked by the Python tests.
pub const FORK_MESSAGE: &str =
    "volley._core was used after fork(); create new Consumer/Publisher objects in the child process";

#[derive(Debug, Clone, PartialEq, Error)]
pub enum CoreError {
    /// Invalid messagepack v1 message, or invalid input to a packer (`CodecError`).
    #[error("{0}")]
    Codec(String),

    /// Could not connect, connection lost and retries exhausted, login refused, or the object is
    /// closed (`AmqpConnectionError`).
    #[error("{0}")]
    Connection(String),

    /// The broker refused the login: wrong credentials, or no access to the vhost
    /// (`AmqpConnectionError`; never retried).
    #[error("{0}")]
    LoginRefused(String),

    /// The broker closed the channel, e.g. 404 NOT_FOUND or 403 ACCESS_REFUSED (`ChannelClosed`).
    #[error("{message}")]
    ChannelClosed { code: u16, message: String },

    /// A Consumer/Publisher created before `fork()` was used in the child (`ForkError`).
    #[error("{}", FORK_MESSAGE)]
    Fork,

    /// Publisher confirms did not arrive in time (`PublishTimeout`).
    #[error("{0}")]
    PublishTimeout(String),

    /// A caller passed a value the AMQP protocol cannot carry (`ValueError`).
    #[error("{0}")]
    InvalidArgument(String),

    /// A bug: a panic in a Rust task, or an invariant that did not hold (`CoreError`).
    #[error("internal error in volley._core: {0}")]
    Internal(String),
}

impl CoreError {
    pub(crate) fn codec(msg: impl Into<String>) -> Self {
        CoreError::Codec(msg.into())
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
