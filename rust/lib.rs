//! Native core of Volley (`volley._core`): the messagepack v1 codec, a streaming AMQP consumer
//! and a publisher with batched confirms, on one process-wide tokio runtime.
//!
//! Nothing outside `py/` knows about Python; `cargo test` runs without an interpreter.

pub mod batches;
pub mod codec;
pub mod connect;
pub mod consumer;
pub mod error;
pub mod headers;
pub mod publisher;
pub mod runtime;
pub mod tags;
pub mod tls;

#[cfg(feature = "python")]
mod py;

pub use error::{CoreError, Result};
