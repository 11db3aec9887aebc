//! Python values ↔ [`HeaderValue`].

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

use crate::headers::{HeaderValue, Headers};

/// Nesting bound for header values (AMQP tables nest; Python objects can be cyclic).
const MAX_DEPTH: usize = 32;

pub fn headers_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Headers> {
    let dict = obj
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("headers must be a dict"))?;
    table_from_py(dict, 0)
}

fn table_from_py(dict: &Bound<'_, PyDict>, depth: usize) -> PyResult<Headers> {
    let mut out = Vec::with_capacity(dict.len());
    for (k, v) in dict.iter() {
        let key: String = k
            .extract()
            .map_err(|_| PyTypeError::new_err("header names must be str"))?;
        out.push((key, value_from_py(&v, depth + 1)?));
    }
    Ok(out)
}

fn value_from_py(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<HeaderValue> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err("header value nested too deeply"));
    }
    if obj.is_none() {
        return Ok(HeaderValue::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(HeaderValue::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        return obj.extract::<i64>().map(HeaderValue::Int).map_err(|_| {
            PyValueError::new_err("header integers must fit in a signed 64-bit integer")
        });
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(HeaderValue::Float(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(HeaderValue::Str(s.to_str()?.to_owned()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(HeaderValue::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(HeaderValue::Bytes(b.to_vec()));
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return l
            .iter()
            .map(|v| value_from_py(&v, depth + 1))
            .collect::<PyResult<_>>()
            .map(HeaderValue::List);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return t
            .iter()
            .map(|v| value_from_py(&v, depth + 1))
            .collect::<PyResult<_>>()
            .map(HeaderValue::List);
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return table_from_py(d, depth).map(HeaderValue::Table);
    }
    Err(PyTypeError::new_err(format!(
        "unsupported header value type: {} (use str, int, float, bool, bytes, None, list or dict)",
        obj.get_type().name()?
    )))
}

pub fn headers_to_py<'py>(py: Python<'py>, headers: &Headers) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in headers {
        dict.set_item(k, value_to_py(py, v)?)?;
    }
    Ok(dict)
}

fn value_to_py<'py>(py: Python<'py>, value: &HeaderValue) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        HeaderValue::Null => py.None().into_bound(py),
        HeaderValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        HeaderValue::Int(i) => i.into_pyobject(py)?.into_any(),
        HeaderValue::Float(f) => PyFloat::new(py, *f).into_any(),
        HeaderValue::Str(s) => PyString::new(py, s).into_any(),
        HeaderValue::Bytes(b) => PyBytes::new(py, b).into_any(),
        HeaderValue::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(value_to_py(py, item)?)?;
            }
            list.into_any()
        }
        HeaderValue::Table(entries) => headers_to_py(py, entries)?.into_any(),
    })
}
