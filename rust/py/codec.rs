//! `Message` and the codec functions.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::codec::{self, Kind, Message, ResultExtras};

/// Inputs at least this large are packed/decoded with the GIL released.
const DETACH_THRESHOLD: usize = 64 * 1024;

/// A decoded envelope; the same attributes as `volley.protocol.messages.Message`.
#[pyclass(frozen, eq, hash, module = "volley._core", name = "Message")]
#[derive(PartialEq, Eq, Hash)]
pub struct PyMessage {
    pub(crate) inner: Message,
}

fn parse_kind(kind: &str) -> PyResult<Kind> {
    match kind {
        "task" => Ok(Kind::Task),
        "result" => Ok(Kind::Result),
        "ep_status_report" => Ok(Kind::EpStatusReport),
        other => Err(PyValueError::new_err(format!(
            "unknown message kind: {}",
            codec::py_repr_str(other)
        ))),
    }
}

#[pymethods]
impl PyMessage {
    #[new]
    #[pyo3(signature = (kind, task_id=None, endpoint_id=None, data=None, error_code=None,
                        error_message=None, details=None, task_statuses=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: &str,
        task_id: Option<String>,
        endpoint_id: Option<String>,
        data: Option<String>,
        error_code: Option<String>,
        error_message: Option<String>,
        details: Option<String>,
        task_statuses: Option<String>,
    ) -> PyResult<Self> {
        Ok(PyMessage {
            inner: Message {
                kind: parse_kind(kind)?,
                task_id,
                endpoint_id,
                data,
                error_code,
                error_message,
                details,
                task_statuses,
            },
        })
    }

    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind.as_str()
    }

    #[getter]
    fn task_id(&self) -> Option<&str> {
        self.inner.task_id.as_deref()
    }

    #[getter]
    fn endpoint_id(&self) -> Option<&str> {
        self.inner.endpoint_id.as_deref()
    }

    #[getter]
    fn data(&self) -> Option<&str> {
        self.inner.data.as_deref()
    }

    #[getter]
    fn error_code(&self) -> Option<&str> {
        self.inner.error_code.as_deref()
    }

    #[getter]
    fn error_message(&self) -> Option<&str> {
        self.inner.error_message.as_deref()
    }

    #[getter]
    fn details(&self) -> Option<&str> {
        self.inner.details.as_deref()
    }

    #[getter]
    fn task_statuses(&self) -> Option<&str> {
        self.inner.task_statuses.as_deref()
    }

    #[getter]
    fn is_error(&self) -> bool {
        self.inner.is_error()
    }

    /// `json.loads(details)`, or None.
    fn details_dict<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match &self.inner.details {
            None => Ok(None),
            Some(text) => Ok(Some(
                py.import("json")?.call_method1("loads", (text.as_str(),))?,
            )),
        }
    }

    fn __repr__(&self) -> String {
        let m = &self.inner;
        let opt = |v: &Option<String>| match v {
            None => "None".to_owned(),
            Some(s) => codec::py_repr_str(s),
        };
        format!(
            "Message(kind={}, task_id={}, endpoint_id={}, data={}, error_code={}, \
             error_message={}, details={}, task_statuses={})",
            codec::py_repr_str(m.kind.as_str()),
            opt(&m.task_id),
            opt(&m.endpoint_id),
            opt(&m.data),
            opt(&m.error_code),
            opt(&m.error_message),
            opt(&m.details),
            opt(&m.task_statuses),
        )
    }
}

fn maybe_detached<T: Send>(py: Python<'_>, size: usize, f: impl FnOnce() -> T + Send) -> T {
    if size >= DETACH_THRESHOLD {
        py.detach(f)
    } else {
        f()
    }
}

#[pyfunction]
pub fn pack_task<'py>(
    py: Python<'py>,
    task_id: &str,
    task_buffer: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let buf = maybe_detached(py, task_buffer.len(), || {
        codec::pack_task(task_id, task_buffer)
    })?;
    Ok(PyBytes::new(py, &buf))
}

#[pyfunction]
#[pyo3(signature = (task_id, data, *, error_code=None, error_message=None, details=None,
                    task_statuses=None))]
#[allow(clippy::too_many_arguments)]
pub fn pack_result<'py>(
    py: Python<'py>,
    task_id: &str,
    data: &str,
    error_code: Option<&str>,
    error_message: Option<&str>,
    details: Option<&str>,
    task_statuses: Option<&str>,
) -> PyResult<Bound<'py, PyBytes>> {
    let size = data.len() + details.map_or(0, str::len) + task_statuses.map_or(0, str::len);
    let extras = ResultExtras {
        error_code,
        error_message,
        details,
        task_statuses,
    };
    let buf = maybe_detached(py, size, || codec::pack_result(task_id, data, extras))?;
    Ok(PyBytes::new(py, &buf))
}

#[pyfunction]
#[pyo3(signature = (endpoint_id, global_state, task_statuses="{}"))]
pub fn pack_status_report<'py>(
    py: Python<'py>,
    endpoint_id: &str,
    global_state: &str,
    task_statuses: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let buf = codec::pack_status_report(endpoint_id, global_state, task_statuses)?;
    Ok(PyBytes::new(py, &buf))
}

#[pyfunction]
pub fn decode(py: Python<'_>, body: &[u8]) -> PyResult<PyMessage> {
    let inner = maybe_detached(py, body.len(), || codec::decode(body))?;
    Ok(PyMessage { inner })
}
