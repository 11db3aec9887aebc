//! The Python module `volley._core`: all pyo3 code lives in this folder.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::runtime::Pending;

mod codec;
mod consumer;
mod errors;
mod headers;
mod publisher;

/// Longest time a wait holds off Python signal handlers (Ctrl-C).
pub(crate) const SIGNAL_SLICE: Duration = Duration::from_millis(50);

/// Wait for a runtime task with the GIL released, checking for signals between slices.
pub(crate) fn wait_pending<T: Send + 'static>(
    py: Python<'_>,
    mut pending: Pending<T>,
) -> PyResult<T> {
    loop {
        if let Some(result) = py.detach(|| pending.wait(SIGNAL_SLICE)) {
            return result.map_err(Into::into);
        }
        py.check_signals()?;
    }
}

/// `None` → no limit; negative or NaN → ValueError; +inf → no limit.
pub(crate) fn check_timeout(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number or None, got {t}"
        ))),
        Some(t) => Ok(Duration::try_from_secs_f64(t).ok()),
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<codec::PyMessage>()?;
    m.add_class::<consumer::PyDelivery>()?;
    m.add_class::<consumer::PyConsumer>()?;
    m.add_class::<publisher::PyPublisher>()?;
    m.add_function(wrap_pyfunction!(codec::pack_task, m)?)?;
    m.add_function(wrap_pyfunction!(codec::pack_result, m)?)?;
    m.add_function(wrap_pyfunction!(codec::pack_status_report, m)?)?;
    m.add_function(wrap_pyfunction!(codec::decode, m)?)?;
    Ok(())
}
