//! Decoding chunks of records into Arrow batches with arrow-json and
//! arrow-csv, decoding only the columns the query uses.
//!
//! The fast path hands a whole chunk to the vectorized decoder. When a batch
//! fails (a malformed line, a value of the wrong type), that batch's lines
//! are decoded one by one: good records are kept, bad ones are reported
//! with their line number and skipped, and decoding goes on.

use std::collections::VecDeque;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::dead_letter::DeadLetter;
use velostream_engine::JobMetrics;

use super::RecordFormat;

enum Inner {
    Json(arrow_json::reader::Decoder),
    Csv(Box<arrow_csv::reader::Decoder>),
}

impl Inner {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        match self {
            Inner::Json(d) => d.decode(buf),
            Inner::Csv(d) => d.decode(buf),
        }
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        match self {
            Inner::Json(d) => d.flush(),
            Inner::Csv(d) => d.flush(),
        }
    }
}

/// Where a chunk's records come from, for reports of malformed ones.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// Lines of a file (or stdin); the chunk starts at line `first_line`.
    Lines { name: &'a str, first_line: u64 },
    /// Kafka messages, one record each: record `i` is at `offsets[i]` of `partitions[i]`.
    Messages {
        topic: &'a str,
        partitions: &'a [i32],
        offsets: &'a [i64],
    },
}

impl Origin<'_> {
    fn name(&self) -> &str {
        match self {
            Origin::Lines { name, .. } => name,
            Origin::Messages { topic, .. } => topic,
        }
    }

    /// Where record `index` of the chunk is: `file:line` or `topic[partition]@offset`.
    fn position(&self, index: usize) -> String {
        match self {
            Origin::Lines { name, first_line } => format!("{name}:{}", first_line + index as u64),
            Origin::Messages {
                topic,
                partitions,
                offsets,
            } => format!("{topic}[{}]@{}", partitions[index], offsets[index]),
        }
    }
}

/// Decodes record chunks of one format into batches of one schema.
pub struct BatchDecoder {
    format: RecordFormat,
    /// Every column of the source, in file order (CSV is positional).
    full_schema: SchemaRef,
    /// The columns to produce.
    schema: SchemaRef,
    batch_size: usize,
    inner: Inner,
    /// After a `decode_next` that skipped malformed records: the indices
    /// (within its chunk) of the records it kept.
    kept: Option<Vec<u32>>,
}

impl BatchDecoder {
    pub fn new(
        format: RecordFormat,
        full_schema: SchemaRef,
        schema: SchemaRef,
        batch_size: usize,
    ) -> Result<Self, ArrowError> {
        let inner = build(format, &full_schema, &schema, batch_size)?;
        Ok(Self {
            format,
            full_schema,
            schema,
            batch_size,
            inner,
            kept: None,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Decodes one batch from the front of `chunk` (whole records, each
    /// ending with a newline, from `origin`) into `out`; returns the bytes
    /// consumed, 0 when nothing but blank space is left. Decoding a batch at
    /// a time keeps a batch's latency to its own records.
    pub fn decode_next(
        &mut self,
        chunk: &[u8],
        origin: Origin<'_>,
        metrics: &JobMetrics,
        out: &mut VecDeque<RecordBatch>,
    ) -> Result<usize, ArrowError> {
        self.kept = None;
        match self.decode_batch(chunk) {
            Ok((consumed, batch)) => {
                out.extend(batch.filter(|b| b.num_rows() > 0));
                Ok(consumed)
            }
            Err(_) => {
                self.inner = build(
                    self.format,
                    &self.full_schema,
                    &self.schema,
                    self.batch_size,
                )?;
                self.decode_lines(chunk, origin, metrics, out)
            }
        }
    }

    /// One batch from the front of `buf`: bytes consumed and the batch.
    fn decode_batch(&mut self, buf: &[u8]) -> Result<(usize, Option<RecordBatch>), ArrowError> {
        let consumed = self.inner.decode(buf)?;
        let batch = self.inner.flush()?;
        Ok((consumed, batch))
    }

    /// The records the last `decode_next` kept, by index in its chunk, when
    /// it skipped malformed ones (`None`: it kept every record).
    pub fn kept(&self) -> Option<&[u32]> {
        self.kept.as_deref()
    }

    /// The slow path: up to one batch worth of lines, each on its own.
    fn decode_lines(
        &mut self,
        buf: &[u8],
        origin: Origin<'_>,
        metrics: &JobMetrics,
        out: &mut VecDeque<RecordBatch>,
    ) -> Result<usize, ArrowError> {
        let mut good = Vec::new();
        let mut kept = Vec::new();
        let mut pos = 0;
        let mut records = 0;
        let mut line = 0;
        while pos < buf.len() && records < self.batch_size {
            let end = memchr::memchr(b'\n', &buf[pos..])
                .map(|i| pos + i + 1)
                .unwrap_or(buf.len());
            let text = &buf[pos..end];
            if !text.iter().all(u8::is_ascii_whitespace) {
                records += 1;
                let mut single = build(self.format, &self.full_schema, &self.schema, 1)?;
                let decoded = single.decode(text).and_then(|n| {
                    if n < text.len() && !text[n..].iter().all(u8::is_ascii_whitespace) {
                        return Err(ArrowError::ParseError(
                            "more than one record on the line".into(),
                        ));
                    }
                    single.flush()
                });
                match decoded {
                    Ok(Some(batch)) => {
                        kept.push(line as u32);
                        good.push(batch)
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let position = origin.position(line);
                        let reason = clean_message(&e);
                        metrics.bad_record(&position, &reason);
                        metrics.dead_letter(|| DeadLetter {
                            source: origin.name().to_string(),
                            position,
                            reason,
                            record: String::from_utf8_lossy(text).trim_end().to_string(),
                            event_time_ms: None,
                        });
                    }
                }
            }
            pos = end;
            line += 1;
        }
        if !good.is_empty() {
            out.push_back(concat_batches(&self.schema, &good)?);
        }
        self.kept = Some(kept);
        Ok(pos)
    }
}

fn build(
    format: RecordFormat,
    full: &SchemaRef,
    schema: &SchemaRef,
    batch_size: usize,
) -> Result<Inner, ArrowError> {
    Ok(match format {
        RecordFormat::JsonLines | RecordFormat::Json => Inner::Json(
            arrow_json::ReaderBuilder::new(schema.clone())
                .with_batch_size(batch_size)
                .with_coerce_primitive(true)
                .build_decoder()?,
        ),
        RecordFormat::Csv { delimiter, .. } => {
            let projection = schema
                .fields()
                .iter()
                .map(|f| full.index_of(f.name()))
                .collect::<Result<Vec<_>, _>>()?;
            Inner::Csv(Box::new(
                arrow_csv::ReaderBuilder::new(full.clone())
                    .with_header(false)
                    .with_delimiter(delimiter)
                    .with_batch_size(batch_size)
                    .with_projection(projection)
                    .build_decoder(),
            ))
        }
    })
}

/// Arrow's messages carry a variant prefix ("Json error: ...") that means
/// nothing to a user.
fn clean_message(e: &ArrowError) -> String {
    let text = e.to_string();
    for prefix in [
        "Json error: ",
        "Parser error: ",
        "Csv error: ",
        "Invalid argument error: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    text
}
