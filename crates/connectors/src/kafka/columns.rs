//! The per-message columns a Kafka source adds to its records
//! (`_key`, `_partition`, `_offset`, `_timestamp`, `_topic`, `_headers`),
//! collected while messages are read and appended after decoding.

use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, ArrayRef, BinaryBuilder, Int32Array, Int64Array, MapBuilder, StringBuilder,
    TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::message::{BorrowedMessage, Headers, Message};

/// What a source reads of a message, whichever way it was taken from
/// librdkafka (one at a time, or a batch from the source's own queue).
pub trait MessageFields {
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn payload(&self) -> Option<&[u8]>;
    fn key(&self) -> Option<&[u8]>;
    /// Milliseconds since the Unix epoch, when the message has a time.
    fn timestamp_ms(&self) -> Option<i64>;
    /// Header names and values (as text).
    fn header_pairs(&self) -> Vec<(String, Option<String>)>;
}

impl MessageFields for BorrowedMessage<'_> {
    fn partition(&self) -> i32 {
        Message::partition(self)
    }

    fn offset(&self) -> i64 {
        Message::offset(self)
    }

    fn payload(&self) -> Option<&[u8]> {
        Message::payload(self)
    }

    fn key(&self) -> Option<&[u8]> {
        Message::key(self)
    }

    fn timestamp_ms(&self) -> Option<i64> {
        Message::timestamp(self).to_millis()
    }

    fn header_pairs(&self) -> Vec<(String, Option<String>)> {
        self.headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            h.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The system columns of one batch of messages, in message order.
#[derive(Default)]
pub struct MessageColumns {
    pub partitions: Vec<i32>,
    pub offsets: Vec<i64>,
    keys: Vec<Option<Vec<u8>>>,
    timestamps: Vec<Option<i64>>,
    headers: Vec<Vec<(String, Option<String>)>>,
    /// Which columns the query reads; the others are not collected.
    wants_keys: bool,
    /// The column that holds the message key (`key.field`).
    key_field: Option<String>,
    wants_timestamps: bool,
    wants_headers: bool,
}

impl MessageColumns {
    /// Collects what `schema` (the source's projected schema) needs;
    /// `key_field` is a column filled from the message key.
    pub fn for_schema(schema: &SchemaRef, key_field: Option<&str>) -> Self {
        let has = |n: &str| schema.index_of(n).is_ok();
        Self {
            wants_keys: has("_key") || key_field.is_some_and(has),
            key_field: key_field.map(str::to_string),
            wants_timestamps: has("_timestamp"),
            wants_headers: has("_headers"),
            ..Self::default()
        }
    }

    pub fn clear(&mut self) {
        self.partitions.clear();
        self.offsets.clear();
        self.keys.clear();
        self.timestamps.clear();
        self.headers.clear();
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Records one message's columns.
    pub fn push(&mut self, m: &impl MessageFields) {
        self.partitions.push(m.partition());
        self.offsets.push(m.offset());
        if self.wants_keys {
            self.keys.push(m.key().map(<[u8]>::to_vec));
        }
        if self.wants_timestamps {
            self.timestamps.push(m.timestamp_ms());
        }
        if self.wants_headers {
            self.headers.push(m.header_pairs());
        }
    }

    /// `decoded` (the payload columns of the kept messages, `kept` = their
    /// indices, `None` for all) completed with the system columns into `schema`.
    pub fn complete(
        &self,
        decoded: &RecordBatch,
        kept: Option<&[u32]>,
        topic: &str,
        schema: &SchemaRef,
    ) -> Result<RecordBatch, ArrowError> {
        let rows = decoded.num_rows();
        let pick = |array: ArrayRef| -> Result<ArrayRef, ArrowError> {
            match kept {
                Some(k) => take(&array, &UInt32Array::from(k.to_vec()), None),
                None => Ok(array),
            }
        };
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let is_key_field = self.key_field.as_deref() == Some(field.name().as_str());
            let column: ArrayRef = match field.name().as_str() {
                "_key" => pick(self.key_column())?,
                _ if is_key_field => pick(cast(&self.key_column(), field.data_type())?)?,
                "_partition" => pick(Arc::new(Int32Array::from(self.partitions.clone())))?,
                "_offset" => pick(Arc::new(Int64Array::from(self.offsets.clone())))?,
                "_timestamp" => pick(Arc::new(
                    TimestampMillisecondArray::from(self.timestamps.clone()).with_timezone_opt(
                        match field.data_type() {
                            datafusion::arrow::datatypes::DataType::Timestamp(_, tz) => tz.clone(),
                            _ => None,
                        },
                    ),
                ))?,
                "_topic" => Arc::new(datafusion::arrow::array::StringArray::from(vec![
                    topic;
                    rows
                ])),
                "_headers" => {
                    let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                    for headers in &self.headers {
                        for (k, v) in headers {
                            b.keys().append_value(k);
                            b.values().append_option(v.as_deref());
                        }
                        b.append(true)?;
                    }
                    pick(Arc::new(b.finish()))?
                }
                name => decoded.column_by_name(name).cloned().ok_or_else(|| {
                    ArrowError::SchemaError(format!("decoded batch has no column {name}"))
                })?,
            };
            columns.push(column);
        }
        RecordBatch::try_new(schema.clone(), columns)
    }
}

impl MessageColumns {
    /// The message keys as text.
    fn key_column(&self) -> ArrayRef {
        let mut b = StringBuilder::new();
        for k in &self.keys {
            b.append_option(k.as_ref().map(|k| String::from_utf8_lossy(k)));
        }
        Arc::new(b.finish())
    }
}

/// Rows of `schema` that only carry `key` in `key_field` (the other
/// columns NULL): how a tombstone reaches a table.
pub fn tombstone(
    schema: &SchemaRef,
    key_field: &str,
    key: &[u8],
) -> Result<RecordBatch, ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            if f.name() == key_field {
                let text: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec![
                    String::from_utf8_lossy(key).into_owned(),
                ]));
                cast(&text, f.data_type())
            } else {
                Ok(new_null_array(f.data_type(), 1))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )
}

/// A raw-bytes column for the `bytes` format.
pub fn bytes_column(values: &[Option<Vec<u8>>]) -> ArrayRef {
    let mut b = BinaryBuilder::new();
    for v in values {
        b.append_option(v.as_deref());
    }
    Arc::new(b.finish())
}
