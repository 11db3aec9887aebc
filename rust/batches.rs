//! Result batches: several packed results in one message, between Volley's own programs
//! (docs/protocol.md, "Result batches"). The reference is `volley.protocol.batches`; the texts
//! of the errors are the same.

use std::ops::Range;

use crate::codec::{self, Message};
use crate::headers::{HeaderValue, Headers};

/// The header that marks a batch; its value is how many results the body holds.
pub const BATCH_HEADER: &str = "volley-batch";
const LENGTH: usize = 4;

/// One result of a batch: its packed bytes in the body, and the message or why it is invalid.
#[derive(Debug, Clone)]
pub struct Part {
    pub range: Range<usize>,
    pub decoded: std::result::Result<Message, String>,
}

/// The batch count in `headers`, when the message is a batch (whatever the value's type).
pub fn batch_count(headers: &Headers) -> Option<&HeaderValue> {
    headers
        .iter()
        .find(|(k, _)| k == BATCH_HEADER)
        .map(|(_, v)| v)
}

fn python_repr(value: &HeaderValue) -> String {
    match value {
        HeaderValue::Null => "None".to_owned(),
        HeaderValue::Bool(true) => "True".to_owned(),
        HeaderValue::Bool(false) => "False".to_owned(),
        HeaderValue::Int(i) => i.to_string(),
        HeaderValue::Float(f) => codec::py_float_repr(*f),
        HeaderValue::Str(s) => codec::py_repr_str(s),
        other => format!("{other:?}"),
    }
}

/// Where each result of a batch body lies, checked against the header's `count`.
pub fn split(body: &[u8], count: &HeaderValue) -> std::result::Result<Vec<Range<usize>>, String> {
    let count = match count {
        HeaderValue::Int(n) if *n >= 1 => *n as usize,
        other => {
            return Err(format!(
                "header '{BATCH_HEADER}' must be a positive integer, got {}",
                python_repr(other)
            ))
        }
    };
    let mut parts = Vec::with_capacity(count.min(4096));
    let mut pos = 0;
    while pos < body.len() {
        if parts.len() == count {
            return Err(format!(
                "{} bytes follow the {count} result(s) the header announced",
                body.len() - pos
            ));
        }
        if pos + LENGTH > body.len() {
            return Err(format!(
                "result {}: the length is cut off at byte {pos}",
                parts.len() + 1
            ));
        }
        let mut len = [0u8; LENGTH];
        len.copy_from_slice(&body[pos..pos + LENGTH]);
        let size = u32::from_be_bytes(len) as usize;
        let start = pos + LENGTH;
        if start + size > body.len() {
            return Err(format!(
                "result {}: declares {size} bytes but only {} remain",
                parts.len() + 1,
                body.len() - start
            ));
        }
        parts.push(start..start + size);
        pos = start + size;
    }
    if parts.len() != count {
        return Err(format!(
            "the header announced {count} result(s), the body holds {}",
            parts.len()
        ));
    }
    Ok(parts)
}

/// Split a batch body and decode each result.
pub fn decode_batch(body: &[u8], count: &HeaderValue) -> std::result::Result<Vec<Part>, String> {
    Ok(split(body, count)?
        .into_iter()
        .map(|range| {
            let decoded = codec::decode(&body[range.clone()]).map_err(|e| e.to_string());
            Part { range, decoded }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bodies {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        out
    }

    #[test]
    fn splits_what_was_packed() {
        let body = pack(&[b"ab", b"", b"xyz"]);
        let ranges = split(&body, &HeaderValue::Int(3)).unwrap();
        let parts: Vec<&[u8]> = ranges.into_iter().map(|r| &body[r]).collect();
        assert_eq!(parts, vec![&b"ab"[..], &b""[..], &b"xyz"[..]]);
    }

    #[test]
    fn refuses_what_does_not_frame() {
        let two = pack(&[b"a", b"b"]);
        let cases: Vec<(Vec<u8>, HeaderValue, &str)> = vec![
            (
                two.clone(),
                HeaderValue::Int(3),
                "the header announced 3 result(s), the body holds 2",
            ),
            (
                two.clone(),
                HeaderValue::Int(1),
                "5 bytes follow the 1 result(s) the header announced",
            ),
            (
                two[..two.len() - 1].to_vec(),
                HeaderValue::Int(2),
                "result 2: declares 1 bytes but only 0 remain",
            ),
            (
                vec![0, 0],
                HeaderValue::Int(1),
                "result 1: the length is cut off at byte 0",
            ),
            (
                two.clone(),
                HeaderValue::Str("2".into()),
                "header 'volley-batch' must be a positive integer, got '2'",
            ),
            (
                two,
                HeaderValue::Int(0),
                "header 'volley-batch' must be a positive integer, got 0",
            ),
        ];
        for (body, count, want) in cases {
            assert_eq!(split(&body, &count).unwrap_err(), want);
        }
    }

    #[test]
    fn decodes_each_result_on_its_own() {
        let good = codec::pack_result(
            "00000000-0000-4000-8000-000000000001",
            "01\nx",
            Default::default(),
        )
        .unwrap();
        let body = pack(&[&good, b"\x00junk"]);
        let parts = decode_batch(&body, &HeaderValue::Int(2)).unwrap();
        assert_eq!(&body[parts[0].range.clone()], &good[..]);
        assert!(parts[0].decoded.is_ok());
        assert!(parts[1]
            .decoded
            .as_ref()
            .unwrap_err()
            .contains("protocol version"));
    }
}
