//! `Publisher`.

use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use tokio::runtime::Handle;

use crate::connect::ConnectSpec;
use crate::publisher::{OutMessage, PublishOptions, PublisherCore};
use crate::runtime::{self, ForkGuard, Pending};

use super::headers::headers_from_py;
use super::{check_timeout, wait_pending};

/// A publisher with publisher confirms; thread-safe; see `_core.pyi`.
#[pyclass(frozen, module = "volley._core", name = "Publisher")]
pub struct PyPublisher {
    core: Arc<PublisherCore>,
    handle: Handle,
    guard: ForkGuard,
}

impl PyPublisher {
    fn run<T: Send + 'static>(
        &self,
        py: Python<'_>,
        f: impl std::future::Future<Output = crate::Result<T>> + Send + 'static,
    ) -> PyResult<T> {
        self.guard.check()?;
        wait_pending(py, Pending::spawn(&self.handle, f))
    }
}

fn extract_message(item: &Bound<'_, PyAny>, user_id: Option<&String>) -> PyResult<OutMessage> {
    let t = item.cast::<PyTuple>().map_err(|_| {
        PyTypeError::new_err(
            "publish_batch() takes tuples (exchange, routing_key, body, headers, timestamp)",
        )
    })?;
    if t.len() != 5 {
        return Err(PyTypeError::new_err(format!(
            "publish_batch() takes tuples (exchange, routing_key, body, headers, timestamp), \
             got a tuple of {}",
            t.len()
        )));
    }
    let body = t.get_item(2)?;
    let body = body
        .cast::<PyBytes>()
        .map_err(|_| PyTypeError::new_err("message body must be bytes"))?;
    let headers = t.get_item(3)?;
    let timestamp = t.get_item(4)?;
    Ok(OutMessage {
        exchange: t.get_item(0)?.extract()?,
        routing_key: t.get_item(1)?.extract()?,
        body: body.as_bytes().to_vec(),
        headers: if headers.is_none() {
            None
        } else {
            Some(headers_from_py(&headers)?)
        },
        timestamp: if timestamp.is_none() {
            None
        } else {
            Some(timestamp.extract()?)
        },
        content_type: None,
        user_id: user_id.cloned(),
    })
}

#[pymethods]
impl PyPublisher {
    #[new]
    #[pyo3(signature = (url, *, ca_file=None, port=None, confirms=true))]
    fn new(
        py: Python<'_>,
        url: &str,
        ca_file: Option<&str>,
        port: Option<u16>,
        confirms: bool,
    ) -> PyResult<Self> {
        let handle = runtime::handle()?;
        let spec = ConnectSpec::new(url, port, ca_file)?;
        let pending = Pending::spawn(&handle, PublisherCore::connect(spec, confirms));
        let core = wait_pending(py, pending)?;
        Ok(PyPublisher {
            core,
            handle,
            guard: ForkGuard::new(),
        })
    }

    #[pyo3(signature = (exchange, routing_key, body, *, headers=None, timestamp=None,
                        persistent=true, mandatory=false, content_type=None, timeout=Some(30.0),
                        user_id=None),
           text_signature = "(self, /, exchange, routing_key, body, *, headers=None, \
                             timestamp=None, persistent=True, mandatory=False, \
                             content_type=None, timeout=30.0, user_id=None)")]
    #[allow(clippy::too_many_arguments)]
    fn publish(
        &self,
        py: Python<'_>,
        exchange: String,
        routing_key: String,
        body: &[u8],
        headers: Option<&Bound<'_, PyAny>>,
        timestamp: Option<u64>,
        persistent: bool,
        mandatory: bool,
        content_type: Option<String>,
        timeout: Option<f64>,
        user_id: Option<String>,
    ) -> PyResult<&'static str> {
        let msg = OutMessage {
            exchange,
            routing_key,
            body: body.to_vec(),
            headers: headers
                .filter(|h| !h.is_none())
                .map(headers_from_py)
                .transpose()?,
            timestamp,
            content_type,
            user_id,
        };
        let opts = PublishOptions {
            persistent,
            mandatory,
            timeout: check_timeout(timeout)?,
        };
        let core = self.core.clone();
        let outcomes = self.run(py, async move { core.publish_batch(vec![msg], opts).await })?;
        Ok(outcomes.first().map_or("ack", |o| o.as_str()))
    }

    #[pyo3(signature = (messages, *, persistent=true, mandatory=false, timeout=Some(30.0),
                        user_id=None),
           text_signature = "(self, /, messages, *, persistent=True, mandatory=False, \
                             timeout=30.0, user_id=None)")]
    fn publish_batch(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        persistent: bool,
        mandatory: bool,
        timeout: Option<f64>,
        user_id: Option<String>,
    ) -> PyResult<Vec<&'static str>> {
        if messages.is_instance_of::<PyString>() || messages.is_instance_of::<PyBytes>() {
            return Err(PyTypeError::new_err(
                "publish_batch() takes a sequence of (exchange, routing_key, body, headers, \
                 timestamp) tuples",
            ));
        }
        let msgs = messages
            .try_iter()
            .map_err(|_| {
                PyTypeError::new_err(
                    "publish_batch() takes a sequence of (exchange, routing_key, body, headers, \
                     timestamp) tuples",
                )
            })?
            .map(|item| extract_message(&item?, user_id.as_ref()))
            .collect::<PyResult<Vec<_>>>()?;
        let opts = PublishOptions {
            persistent,
            mandatory,
            timeout: check_timeout(timeout)?,
        };
        let core = self.core.clone();
        let outcomes = self.run(py, async move { core.publish_batch(msgs, opts).await })?;
        Ok(outcomes.into_iter().map(|o| o.as_str()).collect())
    }

    #[pyo3(signature = (name, kind, *, durable=true, passive=false))]
    fn declare_exchange(
        &self,
        py: Python<'_>,
        name: String,
        kind: String,
        durable: bool,
        passive: bool,
    ) -> PyResult<()> {
        let core = self.core.clone();
        self.run(py, async move {
            core.declare_exchange(&name, &kind, durable, passive).await
        })
    }

    #[pyo3(signature = (name, *, durable=true, passive=false, exclusive=false, auto_delete=false,
                        arguments=None))]
    #[allow(clippy::too_many_arguments)]
    fn declare_queue(
        &self,
        py: Python<'_>,
        name: String,
        durable: bool,
        passive: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u32> {
        let arguments = arguments
            .filter(|a| !a.is_none())
            .map(headers_from_py)
            .transpose()?;
        let core = self.core.clone();
        self.run(py, async move {
            core.declare_queue(&name, durable, passive, exclusive, auto_delete, arguments)
                .await
        })
    }

    fn bind_queue(
        &self,
        py: Python<'_>,
        queue: String,
        exchange: String,
        routing_key: String,
    ) -> PyResult<()> {
        let core = self.core.clone();
        self.run(py, async move {
            core.bind_queue(&queue, &exchange, &routing_key).await
        })
    }

    fn delete_queue(&self, py: Python<'_>, name: String) -> PyResult<()> {
        let core = self.core.clone();
        self.run(py, async move { core.delete_queue(&name).await })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if self.guard.check().is_err() {
            // The parent's connection is not ours to close; just stop using it.
            let _ = self.core.close_nowait();
            return Ok(());
        }
        let core = self.core.clone();
        self.run(py, async move {
            core.close().await;
            Ok(())
        })
    }

    #[getter]
    fn closed(&self) -> bool {
        self.core.is_closed()
    }

    fn __repr__(&self) -> String {
        format!(
            "<volley._core.Publisher {}{}>",
            self.core.target(),
            if self.core.is_closed() { " closed" } else { "" }
        )
    }
}

impl Drop for PyPublisher {
    fn drop(&mut self) {
        if let Some(conn) = self.core.close_nowait() {
            if self.guard.check().is_ok() {
                self.handle.spawn(async move {
                    let _ = conn.close(200, "OK".into()).await;
                });
            }
        }
    }
}
