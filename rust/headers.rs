//! AMQP header values (field tables) as a small enum that maps one-to-one onto Python values.
//!
//! Python → AMQP: `None`→void, `bool`→boolean, `int`→signed 32-bit if it fits else 64-bit,
//! `float`→double, `str`→long string, `bytes`→byte array, list/tuple→field array,
//! dict→field table. AMQP → Python: every integer type and timestamps→int, float/double→float,
//! decimal→float, long/short string→str (bytes when not UTF-8), byte array→bytes.

use lapin::types::{AMQPValue, ByteArray, FieldArray, FieldTable, LongString, ShortString};

use crate::error::{CoreError, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<HeaderValue>),
    Table(Vec<(String, HeaderValue)>),
}

/// Headers in wire order (AMQP tables are sorted by key by lapin).
pub type Headers = Vec<(String, HeaderValue)>;

pub(crate) fn short_string(value: &str, what: &str) -> Result<ShortString> {
    ShortString::try_new(value).map_err(|_| {
        CoreError::InvalidArgument(format!(
            "{what} must be at most 255 bytes of UTF-8, got {} bytes",
            value.len()
        ))
    })
}

impl HeaderValue {
    pub fn to_amqp(&self) -> Result<AMQPValue> {
        Ok(match self {
            HeaderValue::Null => AMQPValue::Void,
            HeaderValue::Bool(b) => AMQPValue::Boolean(*b),
            HeaderValue::Int(i) => match i32::try_from(*i) {
                Ok(small) => AMQPValue::LongInt(small),
                Err(_) => AMQPValue::LongLongInt(*i),
            },
            HeaderValue::Float(f) => AMQPValue::Double(*f),
            HeaderValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
            HeaderValue::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.as_slice())),
            HeaderValue::List(items) => AMQPValue::FieldArray(FieldArray::from(
                items
                    .iter()
                    .map(HeaderValue::to_amqp)
                    .collect::<Result<Vec<_>>>()?,
            )),
            HeaderValue::Table(entries) => AMQPValue::FieldTable(to_field_table(entries)?),
        })
    }

    pub fn from_amqp(value: &AMQPValue) -> HeaderValue {
        match value {
            AMQPValue::Boolean(b) => HeaderValue::Bool(*b),
            AMQPValue::ShortShortInt(i) => HeaderValue::Int(i64::from(*i)),
            AMQPValue::ShortShortUInt(i) => HeaderValue::Int(i64::from(*i)),
            AMQPValue::ShortInt(i) => HeaderValue::Int(i64::from(*i)),
            AMQPValue::ShortUInt(i) => HeaderValue::Int(i64::from(*i)),
            AMQPValue::LongInt(i) => HeaderValue::Int(i64::from(*i)),
            AMQPValue::LongUInt(i) => HeaderValue::Int(i64::from(*i)),
            AMQPValue::LongLongInt(i) => HeaderValue::Int(*i),
            // u64 timestamps above i64::MAX do not occur in practice; saturate rather than wrap.
            AMQPValue::Timestamp(t) => HeaderValue::Int(i64::try_from(*t).unwrap_or(i64::MAX)),
            AMQPValue::Float(f) => HeaderValue::Float(f64::from(*f)),
            AMQPValue::Double(f) => HeaderValue::Float(*f),
            AMQPValue::DecimalValue(d) => {
                HeaderValue::Float(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
            }
            AMQPValue::ShortString(s) => HeaderValue::Str(s.as_str().to_owned()),
            AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
                Ok(text) => HeaderValue::Str(text.to_owned()),
                Err(_) => HeaderValue::Bytes(s.as_bytes().to_vec()),
            },
            AMQPValue::ByteArray(b) => HeaderValue::Bytes(b.as_slice().to_vec()),
            AMQPValue::FieldArray(items) => {
                HeaderValue::List(items.as_slice().iter().map(Self::from_amqp).collect())
            }
            AMQPValue::FieldTable(table) => HeaderValue::Table(from_field_table(table)),
            AMQPValue::Void => HeaderValue::Null,
        }
    }
}

pub fn to_field_table(entries: &[(String, HeaderValue)]) -> Result<FieldTable> {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert(short_string(key, "a header name")?, value.to_amqp()?);
    }
    Ok(table)
}

pub fn from_field_table(table: &FieldTable) -> Headers {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), HeaderValue::from_amqp(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_field_table() {
        let headers: Headers = vec![
            ("a_null".into(), HeaderValue::Null),
            ("b_bool".into(), HeaderValue::Bool(true)),
            ("c_small".into(), HeaderValue::Int(-7)),
            ("d_big".into(), HeaderValue::Int(1 << 40)),
            ("e_float".into(), HeaderValue::Float(1.5)),
            ("f_str".into(), HeaderValue::Str("é".into())),
            ("g_bytes".into(), HeaderValue::Bytes(vec![0, 255])),
            (
                "h_list".into(),
                HeaderValue::List(vec![HeaderValue::Int(1), HeaderValue::Str("x".into())]),
            ),
            (
                "i_table".into(),
                HeaderValue::Table(vec![("k".into(), HeaderValue::Bool(false))]),
            ),
        ];
        let table = to_field_table(&headers).unwrap();
        assert_eq!(from_field_table(&table), headers);
    }

    #[test]
    fn long_names_are_rejected_not_panicking() {
        let long = "x".repeat(256);
        let err = to_field_table(&[(long, HeaderValue::Null)]).unwrap_err();
        assert!(matches!(err, CoreError::InvalidArgument(_)));
    }

    #[test]
    fn non_utf8_long_strings_become_bytes() {
        let v = AMQPValue::LongString(LongString::from(&[0xffu8, 0][..]));
        assert_eq!(
            HeaderValue::from_amqp(&v),
            HeaderValue::Bytes(vec![0xff, 0])
        );
    }
}
