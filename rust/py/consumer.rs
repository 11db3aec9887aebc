//! `Consumer` and `Delivery`.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::codec::py_repr_str;
use crate::connect::ConnectSpec;
use crate::consumer::{ConsumerConfig, ConsumerCore, RawDelivery, Wait};
use crate::headers::Headers;
use crate::runtime;

use super::codec::PyMessage;
use super::headers::headers_to_py;
use super::{check_timeout, wait_pending, SIGNAL_SLICE};

/// How long `close()` waits for the connection to close cleanly.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// One message taken from the queue.
#[pyclass(frozen, module = "volley._core", name = "Delivery")]
pub struct PyDelivery {
    #[pyo3(get)]
    tag: u64,
    #[pyo3(get)]
    redelivered: bool,
    #[pyo3(get)]
    exchange: String,
    #[pyo3(get)]
    routing_key: String,
    #[pyo3(get)]
    timestamp: Option<u64>,
    #[pyo3(get)]
    user_id: Option<String>,
    #[pyo3(get)]
    message: Option<Py<PyMessage>>,
    #[pyo3(get)]
    invalid: Option<String>,
    headers: Headers,
    body: Vec<u8>,
    body_obj: PyOnceLock<Py<PyBytes>>,
    /// A result batch that split: where each result lies, and its message or why it is invalid.
    parts: Option<Vec<BatchPart>>,
}

/// One result of a batch: where it lies in the body, and its message or why it is invalid.
type BatchPart = (Range<usize>, std::result::Result<Py<PyMessage>, String>);

impl PyDelivery {
    fn from_raw(py: Python<'_>, raw: RawDelivery) -> PyResult<Self> {
        let (message, mut invalid) = match raw.decoded {
            None => (None, None),
            Some(Ok(msg)) => (Some(Py::new(py, PyMessage { inner: msg })?), None),
            Some(Err(why)) => (None, Some(why)),
        };
        let parts = match raw.batch {
            None => None,
            Some(Err(why)) => {
                invalid = Some(format!("not a valid result batch: {why}"));
                None
            }
            Some(Ok(parts)) => Some(
                parts
                    .into_iter()
                    .map(|part| {
                        let decoded = match part.decoded {
                            Ok(msg) => Ok(Py::new(py, PyMessage { inner: msg })?),
                            Err(why) => Err(why),
                        };
                        Ok((part.range, decoded))
                    })
                    .collect::<PyResult<Vec<_>>>()?,
            ),
        };
        Ok(PyDelivery {
            tag: raw.tag,
            redelivered: raw.redelivered,
            exchange: raw.exchange,
            routing_key: raw.routing_key,
            timestamp: raw.timestamp,
            user_id: raw.user_id,
            message,
            invalid,
            headers: raw.headers,
            body: raw.body,
            body_obj: PyOnceLock::new(),
            parts,
        })
    }
}

#[pymethods]
impl PyDelivery {
    /// The AMQP headers as a new dict.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        headers_to_py(py, &self.headers)
    }

    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.body_obj
            .get_or_init(py, || PyBytes::new(py, &self.body).unbind())
            .bind(py)
            .clone()
    }

    /// The results of a result batch, each ``(body, message, invalid)``; see `_core.pyi`.
    #[getter]
    fn batch<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        let Some(parts) = &self.parts else {
            return Ok(None);
        };
        let items = parts
            .iter()
            .map(|(range, decoded)| {
                let body = PyBytes::new(py, &self.body[range.clone()]).into_any();
                let (message, invalid) = match decoded {
                    Ok(msg) => (
                        msg.clone_ref(py).into_bound(py).into_any(),
                        py.None().into_bound(py),
                    ),
                    Err(why) => (py.None().into_bound(py), why.into_pyobject(py)?.into_any()),
                };
                PyTuple::new(py, [body, message, invalid])
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items).map(Some)
    }

    fn __repr__(&self) -> String {
        format!(
            "Delivery(tag={}, routing_key={}, redelivered={}, body=<{} bytes>{})",
            self.tag,
            py_repr_str(&self.routing_key),
            if self.redelivered { "True" } else { "False" },
            self.body.len(),
            match &self.invalid {
                Some(why) => format!(", invalid={}", py_repr_str(why)),
                None => String::new(),
            }
        )
    }
}

/// A streaming consumer of one queue with manual acks; see `_core.pyi`.
fn prefetch_count(count: u32) -> PyResult<u16> {
    u16::try_from(count).map_err(|_| {
        PyValueError::new_err(format!(
            "prefetch must be between 0 and 65535 (0 means unlimited), got {count}"
        ))
    })
}

#[pyclass(frozen, module = "volley._core", name = "Consumer")]
pub struct PyConsumer {
    core: ConsumerCore,
}

#[pymethods]
impl PyConsumer {
    #[new]
    #[pyo3(signature = (url, queue, *, ca_file=None, port=None, prefetch=1000, exclusive=false,
                        decode=true, channel_prefetch=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        url: &str,
        queue: &str,
        ca_file: Option<&str>,
        port: Option<u16>,
        prefetch: u32,
        exclusive: bool,
        decode: bool,
        channel_prefetch: Option<u32>,
    ) -> PyResult<Self> {
        let prefetch = prefetch_count(prefetch)?;
        let channel_prefetch = channel_prefetch.map(prefetch_count).transpose()?;
        let handle = runtime::handle()?;
        let spec = Arc::new(ConnectSpec::new(url, port, ca_file)?);
        let cfg = Arc::new(ConsumerConfig {
            queue: queue.to_owned(),
            prefetch,
            channel_prefetch,
            exclusive,
            decode,
        });
        let pending = ConsumerCore::connect(&handle, spec, cfg)?;
        let connected = wait_pending(py, pending)?;
        Ok(PyConsumer {
            core: ConsumerCore::start(&handle, connected),
        })
    }

    /// Change the prefetch of the running consumer (channel-wide `basic.qos`); the
    /// subscription's own `prefetch` stays the ceiling.
    fn set_prefetch(&self, py: Python<'_>, count: u32) -> PyResult<()> {
        let count = prefetch_count(count)?;
        py.detach(|| self.core.set_prefetch(count))
            .map_err(Into::into)
    }

    #[pyo3(signature = (max_messages=1024, timeout=None))]
    fn next_batch(
        &self,
        py: Python<'_>,
        max_messages: usize,
        timeout: Option<f64>,
    ) -> PyResult<Vec<PyDelivery>> {
        if max_messages == 0 {
            return Err(PyValueError::new_err("max_messages must be at least 1"));
        }
        self.core.check_fork()?;
        let deadline = check_timeout(timeout)?.map(|t| Instant::now() + t);
        loop {
            let slice = match deadline {
                None => SIGNAL_SLICE,
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(SIGNAL_SLICE),
            };
            let waited = py.detach(|| self.core.wait_batch(max_messages, slice))?;
            match waited {
                Wait::Batch(batch) => {
                    return batch
                        .into_iter()
                        .map(|raw| PyDelivery::from_raw(py, raw))
                        .collect();
                }
                Wait::Closed => return Ok(Vec::new()),
                Wait::TimedOut => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(Vec::new());
                    }
                    py.check_signals()?;
                }
            }
        }
    }

    fn ack_through(&self, py: Python<'_>, tag: u64) -> PyResult<()> {
        py.detach(|| self.core.ack_through(tag)).map_err(Into::into)
    }

    fn ack(&self, py: Python<'_>, tag: u64) -> PyResult<()> {
        py.detach(|| self.core.ack(tag)).map_err(Into::into)
    }

    #[pyo3(signature = (tag, *, requeue))]
    fn nack(&self, py: Python<'_>, tag: u64, requeue: bool) -> PyResult<()> {
        py.detach(|| self.core.nack(tag, requeue))
            .map_err(Into::into)
    }

    fn close(&self, py: Python<'_>) {
        py.detach(|| self.core.close(CLOSE_WAIT));
    }

    #[getter]
    fn closed(&self) -> bool {
        self.core.is_closed()
    }

    fn __repr__(&self) -> String {
        format!(
            "<volley._core.Consumer {}{}>",
            self.core.target(),
            if self.core.is_closed() { " closed" } else { "" }
        )
    }
}
