//! The messagepack v1 envelope (reference/endpoint-protocol.md §2), byte-identical to the
//! pure-Python reference codec `volley.protocol.messages`.
//!
//! A body is `0x01` followed by compact JSON `{"message_type":..,"data":{..}}`. JSON is written
//! the way Python's `json.dumps(obj, ensure_ascii=False, separators=(",", ":"))` writes it: same
//! string escapes (serde_json's), floats in `float.__repr__` style, `-0` as `0`, and object keys
//! in input order (serde_json `preserve_order`). Numbers are kept as text while parsing
//! (`arbitrary_precision`) so integers of any size survive, as they do in Python.

use serde::Serialize;
use serde_json::{Map, Value};
use std::io;

use crate::error::{CoreError, Result};

pub const PROTOCOL_VERSION: u8 = 1;

/// The three message types Volley moves over AMQP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Task,
    Result,
    EpStatusReport,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Result => "result",
            Kind::EpStatusReport => "ep_status_report",
        }
    }
}

/// A decoded envelope, flattened exactly like `volley.protocol.messages.Message`.
///
/// `data` is `Result.data` for results and `Task.task_buffer` for tasks; `details` is the JSON
/// text of `Result.details` or `EPStatusReport.global_state`; `task_statuses` the JSON text of
/// the transitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    pub kind: Kind,
    pub task_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub data: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub details: Option<String>,
    pub task_statuses: Option<String>,
}

impl Message {
    fn empty(kind: Kind) -> Self {
        Message {
            kind,
            task_id: None,
            endpoint_id: None,
            data: None,
            error_code: None,
            error_message: None,
            details: None,
            task_statuses: None,
        }
    }

    pub fn is_error(&self) -> bool {
        self.error_code.is_some()
    }
}

// ---------------------------------------------------------------------------------------------
// Packing

fn envelope(kind: Kind, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity + 64);
    out.push(PROTOCOL_VERSION);
    out.extend_from_slice(b"{\"message_type\":\"");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    out
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `Task(task_id, task_buffer)` packed.
pub fn pack_task(task_id: &str, task_buffer: &str) -> Result<Vec<u8>> {
    let tid = canonical_uuid_str(task_id, "task_id")?;
    let mut out = envelope(Kind::Task, task_buffer.len());
    out.extend_from_slice(b"{\"task_id\":\"");
    out.extend_from_slice(tid.as_bytes());
    out.extend_from_slice(b"\",\"container_id\":null,\"container\":null,\"task_buffer\":");
    push_json_str(&mut out, task_buffer);
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// Arguments of [`pack_result`] beyond the task id and data.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResultExtras<'a> {
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    /// JSON text of an object (or `null`).
    pub details: Option<&'a str>,
    /// JSON text of a list of task transitions (or `null`).
    pub task_statuses: Option<&'a str>,
}

/// `Result(task_id, data, ...)` packed. `details`/`task_statuses` are JSON text, re-serialized
/// compactly with their key order kept.
pub fn pack_result(task_id: &str, data: &str, extras: ResultExtras<'_>) -> Result<Vec<u8>> {
    let tid = canonical_uuid_str(task_id, "task_id")?;
    let details = extras
        .details
        .map(|text| parse_json_arg(text, "details", JsonShape::ObjectOrNull))
        .transpose()?;
    let statuses = extras
        .task_statuses
        .map(|text| parse_json_arg(text, "task_statuses", JsonShape::ListOrNull))
        .transpose()?;

    let mut out = envelope(Kind::Result, data.len());
    out.extend_from_slice(b"{\"task_id\":\"");
    out.extend_from_slice(tid.as_bytes());
    out.extend_from_slice(b"\",\"data\":");
    push_json_str(&mut out, data);
    out.extend_from_slice(b",\"details\":");
    write_py_json_opt(&mut out, details.as_ref());
    out.extend_from_slice(b",\"error_details\":");
    match extras.error_code {
        None => out.extend_from_slice(b"null"),
        Some(code) => {
            out.extend_from_slice(b"{\"code\":");
            push_json_str(&mut out, code);
            out.extend_from_slice(b",\"user_message\":");
            push_json_str(&mut out, extras.error_message.unwrap_or(""));
            out.push(b'}');
        }
    }
    out.extend_from_slice(b",\"task_statuses\":");
    write_py_json_opt(&mut out, statuses.as_ref());
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// `EPStatusReport(endpoint_id, global_state, task_statuses)` packed; both are JSON text of
/// objects (`task_statuses` `null` means `{}`).
pub fn pack_status_report(
    endpoint_id: &str,
    global_state: &str,
    task_statuses: &str,
) -> Result<Vec<u8>> {
    let eid = canonical_uuid_str(endpoint_id, "endpoint_id")?;
    let state = parse_json_arg(global_state, "global_state", JsonShape::Object)?;
    let statuses = parse_json_arg(task_statuses, "task_statuses", JsonShape::ObjectOrNull)?;
    let mut out = envelope(Kind::EpStatusReport, 64);
    out.extend_from_slice(b"{\"endpoint_id\":\"");
    out.extend_from_slice(eid.as_bytes());
    out.extend_from_slice(b"\",\"global_state\":");
    write_py_json(&mut out, &state);
    out.extend_from_slice(b",\"task_statuses\":");
    if statuses.is_null() {
        out.extend_from_slice(b"{}");
    } else {
        write_py_json(&mut out, &statuses);
    }
    out.extend_from_slice(b"}}");
    Ok(out)
}

#[derive(Clone, Copy)]
enum JsonShape {
    Object,
    ObjectOrNull,
    ListOrNull,
}

fn parse_json_arg(text: &str, field: &str, shape: JsonShape) -> Result<Value> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| CoreError::codec(format!("field '{field}': not valid JSON text: {e}")))?;
    let ok = match shape {
        JsonShape::Object => value.is_object(),
        JsonShape::ObjectOrNull => value.is_object() || value.is_null(),
        JsonShape::ListOrNull => value.is_array() || value.is_null(),
    };
    if !ok {
        let want = match shape {
            JsonShape::Object => "a JSON object",
            JsonShape::ObjectOrNull => "a JSON object or null",
            JsonShape::ListOrNull => "a JSON list or null",
        };
        return Err(CoreError::codec(format!(
            "field '{field}': must be {want}, got {}",
            py_type_name(&value)
        )));
    }
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decode one packed message; the error text names what is wrong, in the wording of
/// `volley.protocol.messages.decode`.
pub fn decode(body: &[u8]) -> Result<Message> {
    let Some((&version, json)) = body.split_first() else {
        return Err(CoreError::codec("empty message body"));
    };
    if version != PROTOCOL_VERSION {
        return Err(CoreError::codec(format!(
            "unrecognized protocol version: {version} (expected 1)"
        )));
    }
    let env: Value = serde_json::from_slice(json)
        .map_err(|e| CoreError::codec(format!("body is not valid JSON: {e}")))?;
    let Value::Object(env) = env else {
        return Err(CoreError::codec("envelope must be a JSON object"));
    };
    let Some(Value::String(kind)) = env.get("message_type") else {
        return Err(CoreError::codec(
            "envelope: missing required field 'message_type'",
        ));
    };
    let Some(Value::Object(data)) = env.get("data") else {
        return Err(CoreError::codec(
            "envelope: missing required field 'data' (an object)",
        ));
    };
    match kind.as_str() {
        "result" => decode_result(data),
        "task" => {
            let mut msg = Message::empty(Kind::Task);
            msg.task_id = Some(canonical_uuid(
                require(data, "task_id", "task")?,
                "task_id",
            )?);
            msg.data = Some(str_field(data, "task_buffer", "task")?.to_owned());
            Ok(msg)
        }
        "ep_status_report" => {
            let state = match data.get("global_state") {
                Some(v) => Some(v),
                None => data.get("ep_status_report"),
            };
            let Some(state @ Value::Object(_)) = state else {
                return Err(CoreError::codec(
                    "ep_status_report: missing required field 'global_state' (an object)",
                ));
            };
            let ts = require(data, "task_statuses", "ep_status_report")?;
            if !ts.is_object() {
                return Err(CoreError::codec(
                    "ep_status_report: field 'task_statuses' must be an object",
                ));
            }
            let mut msg = Message::empty(Kind::EpStatusReport);
            msg.endpoint_id = Some(canonical_uuid(
                require(data, "endpoint_id", "ep_status_report")?,
                "endpoint_id",
            )?);
            msg.details = Some(py_json_string(state));
            msg.task_statuses = Some(py_json_string(ts));
            Ok(msg)
        }
        other => Err(CoreError::codec(format!(
            "unknown message_type: {}",
            py_repr_str(other)
        ))),
    }
}

fn decode_result(data: &Map<String, Value>) -> Result<Message> {
    let mut msg = Message::empty(Kind::Result);
    match data.get("error_details") {
        None | Some(Value::Null) => {}
        Some(Value::Object(err)) => {
            msg.error_code = Some(str_field(err, "code", "result.error_details")?.to_owned());
            msg.error_message =
                Some(str_field(err, "user_message", "result.error_details")?.to_owned());
        }
        Some(_) => {
            return Err(CoreError::codec(
                "result: field 'error_details' must be an object or null",
            ))
        }
    }
    match data.get("details") {
        None | Some(Value::Null) => {}
        Some(det @ Value::Object(_)) => msg.details = Some(py_json_string(det)),
        Some(_) => {
            return Err(CoreError::codec(
                "result: field 'details' must be an object or null",
            ))
        }
    }
    match data.get("task_statuses") {
        None | Some(Value::Null) => {}
        Some(ts @ Value::Array(_)) => msg.task_statuses = Some(py_json_string(ts)),
        Some(_) => {
            return Err(CoreError::codec(
                "result: field 'task_statuses' must be a list or null",
            ))
        }
    }
    msg.task_id = Some(canonical_uuid(
        require(data, "task_id", "result")?,
        "task_id",
    )?);
    msg.data = Some(str_field(data, "data", "result")?.to_owned());
    Ok(msg)
}

fn require<'a>(data: &'a Map<String, Value>, field: &str, kind: &str) -> Result<&'a Value> {
    data.get(field)
        .ok_or_else(|| CoreError::codec(format!("{kind}: missing required field '{field}'")))
}

fn str_field<'a>(data: &'a Map<String, Value>, field: &str, kind: &str) -> Result<&'a str> {
    match require(data, field, kind)? {
        Value::String(s) => Ok(s),
        other => Err(CoreError::codec(format!(
            "{kind}: field '{field}' must be a string, got {}",
            py_type_name(other)
        ))),
    }
}

/// Python's `type(x).__name__` for what `json.loads` would have returned.
fn py_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) => {
            if is_integer_literal(&n.to_string()) {
                "int"
            } else {
                "float"
            }
        }
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

// ---------------------------------------------------------------------------------------------
// UUIDs

fn canonical_uuid(value: &Value, field: &str) -> Result<String> {
    match value {
        Value::String(s) => canonical_uuid_str(s, field),
        other => Err(CoreError::codec(format!(
            "field '{field}': expected a UUID string, got {}",
            py_type_name(other)
        ))),
    }
}

/// Canonical lowercase hyphenated form of a UUID written as 32 hex digits, hyphenated
/// 8-4-4-4-12, in braces, or with a `urn:uuid:` prefix (the forms pydantic accepts upstream).
pub fn canonical_uuid_str(value: &str, field: &str) -> Result<String> {
    parse_uuid(value).ok_or_else(|| {
        CoreError::codec(format!(
            "field '{field}': {} is not a valid UUID",
            py_repr_str(value)
        ))
    })
}

fn parse_uuid(value: &str) -> Option<String> {
    let inner = if let Some(rest) = value.strip_prefix("urn:uuid:") {
        rest
    } else if let Some(rest) = value.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        rest
    } else {
        value
    };
    let bytes = inner.as_bytes();
    let mut hex = [0u8; 32];
    match bytes.len() {
        32 => hex.copy_from_slice(bytes),
        36 => {
            let mut j = 0;
            for (i, &b) in bytes.iter().enumerate() {
                if matches!(i, 8 | 13 | 18 | 23) {
                    if b != b'-' {
                        return None;
                    }
                } else {
                    hex[j] = b;
                    j += 1;
                }
            }
        }
        _ => return None,
    }
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = String::with_capacity(36);
    for (i, b) in hex.iter().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        out.push(char::from(b.to_ascii_lowercase()));
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Python-compatible JSON output

/// `json.dumps(value, ensure_ascii=False, separators=(",", ":"))` of the value Python's
/// `json.loads` would have produced from the same text.
pub fn py_json_string(value: &Value) -> String {
    let mut out = Vec::new();
    write_py_json(&mut out, value);
    // Only valid UTF-8 is ever written: input strings are str and the formatter writes ASCII.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn write_py_json_opt(out: &mut Vec<u8>, value: Option<&Value>) {
    match value {
        Some(v) => write_py_json(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_py_json(out: &mut Vec<u8>, value: &Value) {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, PyFormatter);
    // Serializing a Value into a Vec cannot fail.
    let _ = value.serialize(&mut ser);
}

struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(py_float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        writer.write_all(py_float_repr(f64::from(value)).as_bytes())
    }

    fn write_number_str<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        value: &str,
    ) -> io::Result<()> {
        if is_integer_literal(value) {
            // Python's int() of the literal; JSON forbids leading zeros so only "-0" changes.
            if value == "-0" {
                writer.write_all(b"0")
            } else {
                writer.write_all(value.as_bytes())
            }
        } else {
            let f: f64 = value.parse().unwrap_or(f64::NAN);
            writer.write_all(py_float_repr(f).as_bytes())
        }
    }
}

fn is_integer_literal(s: &str) -> bool {
    !s.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

/// `float.__repr__` as `json.dumps` writes it (`NaN`, `Infinity`, `-Infinity` included).
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` gives the shortest round-tripping digits, as Python's repr does.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let ndigits = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    let decpt = exp + 1; // value = 0.DIGITS * 10**decpt
    let mut out = String::with_capacity(digits.len() + 8);
    if neg {
        out.push('-');
    }
    if decpt > -4 && decpt <= 16 {
        if decpt <= 0 {
            out.push_str("0.");
            for _ in 0..-decpt {
                out.push('0');
            }
            out.push_str(&digits);
        } else if decpt >= ndigits {
            out.push_str(&digits);
            for _ in 0..(decpt - ndigits) {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            let (a, b) = digits.split_at(decpt as usize);
            out.push_str(a);
            out.push('.');
            out.push_str(b);
        }
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let e = decpt - 1;
        out.push('e');
        out.push(if e < 0 { '-' } else { '+' });
        let mag = e.unsigned_abs();
        if mag < 10 {
            out.push('0');
        }
        out.push_str(&mag.to_string());
    }
    out
}

/// Python's `repr()` of a str, as used in error texts (exact for ASCII; other characters are
/// shown as themselves except C1 controls and line/paragraph separators).
pub fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..=0xa0).contains(&(c as u32)) || c == '\u{ad}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "00000000-0000-0000-0000-000000000001";

    fn text(buf: &[u8]) -> String {
        assert_eq!(buf[0], 1);
        String::from_utf8(buf[1..].to_vec()).unwrap()
    }

    #[test]
    fn task_vector_from_protocol_notes() {
        let buf = pack_task(ID, "abc").unwrap();
        assert_eq!(
            text(&buf),
            format!(
                r#"{{"message_type":"task","data":{{"task_id":"{ID}","container_id":null,"container":null,"task_buffer":"abc"}}}}"#
            )
        );
        let msg = decode(&buf).unwrap();
        assert_eq!(msg.kind, Kind::Task);
        assert_eq!(msg.task_id.as_deref(), Some(ID));
        assert_eq!(msg.data.as_deref(), Some("abc"));
        assert!(!msg.is_error());
    }

    #[test]
    fn result_vector_from_protocol_notes() {
        let buf = pack_result(
            ID,
            "x",
            ResultExtras {
                error_code: Some("C"),
                error_message: Some("m"),
                details: None,
                task_statuses: Some(
                    r#"[{"timestamp": 1, "state": "execution-start", "actor": "worker"}]"#,
                ),
            },
        )
        .unwrap();
        assert_eq!(
            text(&buf),
            format!(
                r#"{{"message_type":"result","data":{{"task_id":"{ID}","data":"x","details":null,"error_details":{{"code":"C","user_message":"m"}},"task_statuses":[{{"timestamp":1,"state":"execution-start","actor":"worker"}}]}}}}"#
            )
        );
        let msg = decode(&buf).unwrap();
        assert_eq!(msg.kind, Kind::Result);
        assert!(msg.is_error());
        assert_eq!(msg.error_code.as_deref(), Some("C"));
        assert_eq!(msg.error_message.as_deref(), Some("m"));
        assert_eq!(msg.details, None);
        assert_eq!(
            msg.task_statuses.as_deref(),
            Some(r#"[{"timestamp":1,"state":"execution-start","actor":"worker"}]"#)
        );
    }

    #[test]
    fn status_report_vector_from_protocol_notes() {
        let buf = pack_status_report(ID, r#"{"a": 1}"#, "{}").unwrap();
        assert_eq!(
            text(&buf),
            format!(
                r#"{{"message_type":"ep_status_report","data":{{"endpoint_id":"{ID}","global_state":{{"a":1}},"task_statuses":{{}}}}}}"#
            )
        );
        let msg = decode(&buf).unwrap();
        assert_eq!(msg.kind, Kind::EpStatusReport);
        assert_eq!(msg.endpoint_id.as_deref(), Some(ID));
        assert_eq!(msg.details.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(msg.task_statuses.as_deref(), Some("{}"));
        assert_eq!(
            pack_status_report(ID, "{}", "null").unwrap(),
            pack_status_report(ID, "{}", "{}").unwrap()
        );
    }

    #[test]
    fn result_without_error_has_null_error_details() {
        let buf = pack_result(ID, "d", ResultExtras::default()).unwrap();
        assert_eq!(
            text(&buf),
            format!(
                r#"{{"message_type":"result","data":{{"task_id":"{ID}","data":"d","details":null,"error_details":null,"task_statuses":null}}}}"#
            )
        );
        let buf = pack_result(
            ID,
            "d",
            ResultExtras {
                error_code: Some("E"),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(text(&buf).contains(r#""error_details":{"code":"E","user_message":""}"#));
    }

    #[test]
    fn details_keep_key_order_and_are_compacted() {
        let buf = pack_result(
            ID,
            "",
            ResultExtras {
                details: Some(r#"{"z": 1, "a": {"y": [1, 2.5, "é\u00e9"], "b": null}}"#),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(text(&buf).contains(r#""details":{"z":1,"a":{"y":[1,2.5,"éé"],"b":null}}"#));
        let msg = decode(&buf).unwrap();
        assert_eq!(
            msg.details.as_deref(),
            Some(r#"{"z":1,"a":{"y":[1,2.5,"éé"],"b":null}}"#)
        );
    }

    #[test]
    fn string_escapes_match_python() {
        // json.dumps("\x00\x1f\"\\\n\r\t\x08\x0c\x7fé😀\u2028", ensure_ascii=False)
        let s = "\u{0}\u{1f}\"\\\n\r\t\u{8}\u{c}\u{7f}é😀\u{2028}";
        let buf = pack_task(ID, s).unwrap();
        assert!(text(&buf).ends_with(
            "\"task_buffer\":\"\\u0000\\u001f\\\"\\\\\\n\\r\\t\\b\\f\u{7f}é😀\u{2028}\"}}"
        ));
        assert_eq!(decode(&buf).unwrap().data.as_deref(), Some(s));
    }

    #[test]
    fn uuids_are_canonicalized() {
        let upper = "0123ABCD-0000-0000-0000-00000000000F";
        let canon = "0123abcd-0000-0000-0000-00000000000f";
        for form in [
            upper.to_string(),
            upper.replace('-', ""),
            format!("{{{upper}}}"),
            format!("urn:uuid:{upper}"),
        ] {
            assert_eq!(
                canonical_uuid_str(&form, "task_id").unwrap(),
                canon,
                "{form}"
            );
        }
        for bad in [
            "",
            "x",
            "0123abcd-0000-0000-0000-00000000000",
            "0123abcd-0000-0000-0000-00000000000g",
            "0123abcd0-000-0000-0000-00000000000f",
            "{0123abcd-0000-0000-0000-00000000000f",
            "0x23abcd-0000-0000-0000-00000000000f",
            "+123abcd-0000-0000-0000-00000000000f",
        ] {
            assert!(canonical_uuid_str(bad, "task_id").is_err(), "{bad}");
        }
        assert_eq!(
            pack_task("x", "").unwrap_err(),
            CoreError::Codec("field 'task_id': 'x' is not a valid UUID".into())
        );
    }

    fn err(body: &[u8]) -> String {
        match decode(body) {
            Err(CoreError::Codec(s)) => s,
            other => panic!("expected a codec error, got {other:?}"),
        }
    }

    fn body(json: &str) -> Vec<u8> {
        let mut v = vec![1u8];
        v.extend_from_slice(json.as_bytes());
        v
    }

    #[test]
    fn decode_error_texts() {
        assert_eq!(err(b""), "empty message body");
        assert_eq!(
            err(b"\x00{}"),
            "unrecognized protocol version: 0 (expected 1)"
        );
        assert_eq!(
            err(b"\x02{}"),
            "unrecognized protocol version: 2 (expected 1)"
        );
        assert!(err(&body("{")).starts_with("body is not valid JSON: "));
        assert!(err(b"\x01\xff").starts_with("body is not valid JSON: "));
        assert_eq!(err(&body("[]")), "envelope must be a JSON object");
        assert_eq!(
            err(&body(r#"{"data":{}}"#)),
            "envelope: missing required field 'message_type'"
        );
        assert_eq!(
            err(&body(r#"{"message_type":"task"}"#)),
            "envelope: missing required field 'data' (an object)"
        );
        assert_eq!(
            err(&body(r#"{"message_type":"nope","data":{}}"#)),
            "unknown message_type: 'nope'"
        );
        assert_eq!(
            err(&body(
                r#"{"message_type":"task","data":{"task_buffer":""}}"#
            )),
            "task: missing required field 'task_id'"
        );
        assert_eq!(
            err(&body(r#"{"message_type":"task","data":{"task_id":5}}"#)),
            "field 'task_id': expected a UUID string, got int"
        );
        assert_eq!(
            err(&body(
                r#"{"message_type":"task","data":{"task_id":"nope"}}"#
            )),
            "field 'task_id': 'nope' is not a valid UUID"
        );
        let id = format!(r#""task_id":"{ID}""#);
        assert_eq!(
            err(&body(&format!(
                r#"{{"message_type":"task","data":{{{id}}}}}"#
            ))),
            "task: missing required field 'task_buffer'"
        );
        assert_eq!(
            err(&body(&format!(
                r#"{{"message_type":"task","data":{{{id},"task_buffer":1.5}}}}"#
            ))),
            "task: field 'task_buffer' must be a string, got float"
        );
        assert_eq!(
            err(&body(&format!(
                r#"{{"message_type":"result","data":{{{id},"data":null}}}}"#
            ))),
            "result: field 'data' must be a string, got NoneType"
        );
        assert_eq!(
            err(&body(&format!(
                r#"{{"message_type":"result","data":{{{id},"data":"","error_details":[]}}}}"#
            ))),
            "result: field 'error_details' must be an object or null"
        );
        assert_eq!(
            err(&body(&format!(
                r#"{{"message_type":"result","data":{{{id},"data":"","error_details":{{"code":"c"}}}}}}"#
            ))),
            "result.error_details: missing required field 'user_message'"
        );
        assert_eq!(
            err(&body(&format!(
                r#"{{"message_type":"result","data":{{{id},"data":"","details":"x"}}}}"#
            ))),
            "result: field 'details' must be an object or null"
        );
        assert_eq!(
            err(&body(&format!(
                r#"{{"message_type":"result","data":{{{id},"data":"","task_statuses":{{}}}}}}"#
            ))),
            "result: field 'task_statuses' must be a list or null"
        );
        assert_eq!(
            err(&body(&format!(
                r#"{{"message_type":"ep_status_report","data":{{"endpoint_id":"{ID}","task_statuses":{{}}}}}}"#
            ))),
            "ep_status_report: missing required field 'global_state' (an object)"
        );
        assert_eq!(
            err(&body(&format!(
                r#"{{"message_type":"ep_status_report","data":{{"endpoint_id":"{ID}","global_state":{{}},"task_statuses":[]}}}}"#
            ))),
            "ep_status_report: field 'task_statuses' must be an object"
        );
    }

    #[test]
    fn decode_ignores_unknown_fields_and_accepts_alias() {
        let msg = decode(&body(&format!(
            r#"{{"extra":1,"message_type":"ep_status_report","data":{{"new":[1],"endpoint_id":"{}","ep_status_report":{{"k":"v"}},"task_statuses":{{"t":[]}}}}}}"#,
            ID.to_uppercase()
        )))
        .unwrap();
        assert_eq!(msg.endpoint_id.as_deref(), Some(ID));
        assert_eq!(msg.details.as_deref(), Some(r#"{"k":"v"}"#));
        assert_eq!(msg.task_statuses.as_deref(), Some(r#"{"t":[]}"#));
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_in_the_first_position() {
        let msg = decode(&body(&format!(
            r#"{{"message_type":"result","data":{{"task_id":"{ID}","data":"a","details":{{"x":1,"y":2,"x":3}},"data":"b"}}}}"#
        )))
        .unwrap();
        assert_eq!(msg.data.as_deref(), Some("b"));
        assert_eq!(msg.details.as_deref(), Some(r#"{"x":3,"y":2}"#));
    }

    #[test]
    fn numbers_are_written_like_python() {
        let cases = [
            ("0", "0"),
            ("-0", "0"),
            ("-0.0", "-0.0"),
            (
                "12345678901234567890123456789",
                "12345678901234567890123456789",
            ),
            ("1.0", "1.0"),
            ("1.50", "1.5"),
            ("1E2", "100.0"),
            ("1e16", "1e+16"),
            ("1e15", "1000000000000000.0"),
            ("123456789012345678.0", "1.2345678901234568e+17"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("1.5e-300", "1.5e-300"),
            ("1e400", "Infinity"),
            ("-1e400", "-Infinity"),
            ("0.1", "0.1"),
            ("3.141592653589793", "3.141592653589793"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ];
        for (input, want) in cases {
            let v: Value = serde_json::from_str(&format!("[{input}]")).unwrap();
            assert_eq!(py_json_string(&v), format!("[{want}]"), "{input}");
        }
    }

    #[test]
    fn packers_validate_json_arguments() {
        let e = pack_result(
            ID,
            "",
            ResultExtras {
                details: Some("[1]"),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            e,
            CoreError::Codec("field 'details': must be a JSON object or null, got list".into())
        );
        let e = pack_status_report(ID, "{", "{}").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("field 'global_state': not valid JSON text"));
        let e = pack_status_report("nope", "{}", "{}").unwrap_err();
        assert_eq!(
            e,
            CoreError::Codec("field 'endpoint_id': 'nope' is not a valid UUID".into())
        );
    }

    /// Issue 12, finding 6: nesting is refused at serde_json's recursion limit (128 levels),
    /// long before the decoding thread's stack could overflow, in bodies and in JSON
    /// arguments to the packers alike.
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for depth in [129usize, 100_000, 1_000_000] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            for nested in [&arrays, &objects] {
                let e = err(&body(&format!(
                    r#"{{"message_type":"result","data":{{"task_id":"{ID}","data":"","details":{{"d":{nested}}}}}}}"#
                )));
                assert!(
                    e.starts_with("body is not valid JSON: recursion limit exceeded"),
                    "{e}"
                );
                let e = pack_status_report(ID, &format!("{{\"d\":{nested}}}"), "{}").unwrap_err();
                assert!(e.to_string().contains("recursion limit exceeded"), "{e}");
            }
        }
        // serde_json takes 127 levels: the envelope, data and details objects are three
        let result = |depth: usize| {
            body(&format!(
                r#"{{"message_type":"result","data":{{"task_id":"{ID}","data":"","details":{{"d":{}{}}}}}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            ))
        };
        assert!(decode(&result(124)).is_ok());
        assert!(err(&result(125)).contains("recursion limit exceeded"));
    }

    #[test]
    fn repr_matches_python_for_ascii() {
        assert_eq!(py_repr_str("a'b"), r#""a'b""#);
        assert_eq!(py_repr_str("a'\"b"), r#"'a\'"b'"#);
        assert_eq!(py_repr_str("\u{1}\n\\"), r"'\x01\n\\'");
    }
}
