//! The one place where Rust errors become Python exceptions.
//!
//! The exception classes subclass both `CoreError` and the builtin users already catch
//! (`ConnectionError`, `ValueError`, `TimeoutError`, `RuntimeError`). pyo3's
//! `create_exception!` takes a single base, so the classes are made with `type()` at import.

use pyo3::exceptions::{
    PyConnectionError, PyException, PyRuntimeError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::error::CoreError;

const MODULE: &str = "volley._core";

static CORE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static AMQP_CONNECTION_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CHANNEL_CLOSED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CODEC_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static FORK_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static PUBLISH_TIMEOUT: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn make_class<'py>(
    py: Python<'py>,
    name: &str,
    bases: &[Bound<'py, PyType>],
    doc: &str,
) -> PyResult<Bound<'py, PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", MODULE)?;
    ns.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, bases)?;
    let cls = py
        .get_type::<PyType>()
        .call1((name, bases, ns))?
        .cast_into::<PyType>()?;
    Ok(cls)
}

fn store(cell: &PyOnceLock<Py<PyType>>, py: Python<'_>, cls: &Bound<'_, PyType>) -> PyResult<()> {
    // A second import of the module (e.g. a subinterpreter) keeps the first classes.
    let _ = cell.set(py, cls.clone().unbind());
    Ok(())
}

/// Create the exception classes and add them to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = make_class(
        py,
        "CoreError",
        &[py.get_type::<PyException>()],
        "Base class of the errors raised by volley._core.",
    )?;
    store(&CORE_ERROR, py, &base)?;
    let conn = make_class(
        py,
        "AmqpConnectionError",
        &[base.clone(), py.get_type::<PyConnectionError>()],
        "Could not connect, the connection was lost and retries were exhausted, or the broker \
         refused the login.",
    )?;
    store(&AMQP_CONNECTION_ERROR, py, &conn)?;
    let closed = make_class(
        py,
        "ChannelClosed",
        std::slice::from_ref(&conn),
        "The broker closed the channel (e.g. 404 NOT_FOUND, 403 ACCESS_REFUSED); the message \
         includes the broker's reply text.",
    )?;
    store(&CHANNEL_CLOSED, py, &closed)?;
    let codec = make_class(
        py,
        "CodecError",
        &[base.clone(), py.get_type::<PyValueError>()],
        "A body that is not a valid messagepack v1 message; the text names the field.",
    )?;
    store(&CODEC_ERROR, py, &codec)?;
    let fork = make_class(
        py,
        "ForkError",
        &[base.clone(), py.get_type::<PyRuntimeError>()],
        "A Consumer or Publisher created before fork() was used in the child process.",
    )?;
    store(&FORK_ERROR, py, &fork)?;
    let timeout = make_class(
        py,
        "PublishTimeout",
        &[base.clone(), py.get_type::<PyTimeoutError>()],
        "Publisher confirms did not arrive in time.",
    )?;
    store(&PUBLISH_TIMEOUT, py, &timeout)?;

    for cls in [&base, &conn, &closed, &codec, &fork, &timeout] {
        m.add(cls.name()?, cls)?;
    }
    Ok(())
}

fn raise(py: Python<'_>, cell: &PyOnceLock<Py<PyType>>, msg: String) -> PyErr {
    match cell.get(py) {
        Some(cls) => PyErr::from_type(cls.bind(py).clone(), msg),
        // Only reachable if the module failed to initialise.
        None => PyRuntimeError::new_err(msg),
    }
}

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        Python::attach(|py| {
            let msg = err.to_string();
            match err {
                CoreError::Codec(_) => raise(py, &CODEC_ERROR, msg),
                CoreError::Connection(_) | CoreError::LoginRefused(_) => {
                    raise(py, &AMQP_CONNECTION_ERROR, msg)
                }
                CoreError::ChannelClosed { code, .. } => {
                    // the AMQP reply code travels as data (404, 403, 406, ...): callers decide
                    // on it, never on the message text
                    let err = raise(py, &CHANNEL_CLOSED, msg);
                    if let Err(e) = err.value(py).setattr("code", code) {
                        return e;
                    }
                    err
                }
                CoreError::Fork => raise(py, &FORK_ERROR, msg),
                CoreError::PublishTimeout(_) => raise(py, &PUBLISH_TIMEOUT, msg),
                CoreError::InvalidArgument(_) => PyValueError::new_err(msg),
                CoreError::Internal(_) => raise(py, &CORE_ERROR, msg),
            }
        })
    }
}
