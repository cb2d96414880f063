//! Decoding chunks of records into Arrow batches, decoding only the columns
//! the query uses: JSON with the projected decoder ([`super::projected_json`])
//! and arrow-json for what it declines, CSV with arrow-csv.
//!
//! The fast path hands a whole batch to a vectorized decoder. When a batch
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
use velostream_sql::TimeFormats;

use super::projected_json::ProjectedJson;
use super::{time, RecordFormat};

enum Inner {
    Json(arrow_json::reader::Decoder),
    Csv(Box<arrow_csv::reader::Decoder>),
}

impl Inner {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        guarded(|| match self {
            Inner::Json(d) => d.decode(buf),
            Inner::Csv(d) => d.decode(buf),
        })
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        guarded(|| match self {
            Inner::Json(d) => d.flush(),
            Inner::Csv(d) => d.flush(),
        })
    }
}

/// Runs a step of arrow's decoders, turning a panic into a decode error.
/// Arrow's text-to-number parsers can overflow on extreme input (a decimal
/// written `E-1000000000000000.00` overflows the exponent), and a record
/// must never stop the job: the error sends the batch to the line-by-line
/// path, which finds the record and counts it as malformed. Unwinding
/// through the decoder is sound to observe because a decoder that failed is
/// never used again: every caller replaces it (`decode_next` rebuilds
/// `inner`, `decode_lines` drops its single-line decoder, and a failed
/// projected decoder is rebuilt).
fn guarded<T>(step: impl FnOnce() -> Result<T, ArrowError>) -> Result<T, ArrowError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the decoder failed".to_string());
        Err(ArrowError::ParseError(format!(
            "a value cannot be decoded: {why}"
        )))
    })
}

/// Where a decoder sends the malformed records it finds.
pub trait Rejects {
    fn reject(&mut self, letter: DeadLetter);
}

/// Counted, logged and queued for the dead-letter sink at once.
impl Rejects for &JobMetrics {
    fn reject(&mut self, letter: DeadLetter) {
        self.malformed_record(letter)
    }
}

/// Kept in order, for the thread that hands the batches on to report
/// (a decoding thread's rejects, reported by the job's).
impl Rejects for Vec<DeadLetter> {
    fn reject(&mut self, letter: DeadLetter) {
        self.push(letter)
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
    /// Every column of the source, in file order (CSV is positional), as
    /// the readers decode it: time columns as text (see [`time`]).
    full_schema: SchemaRef,
    /// The columns to produce, as the readers decode them.
    decoded: SchemaRef,
    /// The columns to produce.
    schema: SchemaRef,
    /// How the text of time columns becomes timestamps.
    time_formats: TimeFormats,
    batch_size: usize,
    inner: Inner,
    /// JSON's fast decoder, when every produced column has a type it reads.
    projected: Option<ProjectedJson>,
    /// After a `decode_next` that skipped malformed records: the indices
    /// (within its chunk) of the records it kept.
    kept: Option<Vec<u32>>,
    /// A record longer than this is a bad record (`max.record.bytes`).
    max_record_bytes: usize,
}

impl BatchDecoder {
    pub fn new(
        format: RecordFormat,
        full_schema: SchemaRef,
        schema: SchemaRef,
        batch_size: usize,
    ) -> Result<Self, ArrowError> {
        let full_schema = time::as_text(&full_schema);
        let decoded = time::as_text(&schema);
        let inner = build(format, &full_schema, &decoded, batch_size)?;
        let projected = match format {
            RecordFormat::Csv { .. } => None,
            RecordFormat::JsonLines | RecordFormat::Json => ProjectedJson::new(&decoded),
        };
        Ok(Self {
            format,
            full_schema,
            decoded,
            schema,
            time_formats: TimeFormats::default(),
            batch_size,
            inner,
            projected,
            kept: None,
            max_record_bytes: usize::MAX,
        })
    }

    /// Reads time columns as `formats` says (by default, numbers as epoch
    /// milliseconds and text as ISO 8601).
    pub fn with_time_formats(mut self, formats: TimeFormats) -> Self {
        self.time_formats = formats;
        self
    }

    /// Records longer than `bytes` are bad records.
    pub fn set_max_record_bytes(&mut self, bytes: usize) {
        self.max_record_bytes = bytes;
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Another decoder of the same format, schemas and settings, starting
    /// afresh (for another thread).
    pub fn fresh(&self) -> Result<Self, ArrowError> {
        let mut decoder = Self::new(
            self.format,
            self.full_schema.clone(),
            self.schema.clone(),
            self.batch_size,
        )?
        .with_time_formats(self.time_formats.clone());
        decoder.max_record_bytes = self.max_record_bytes;
        Ok(decoder)
    }

    /// Decodes one batch from the front of `chunk` (whole records, each
    /// ending with a newline, from `origin`) into `out`; returns the bytes
    /// consumed, 0 when nothing but blank space is left. Decoding a batch at
    /// a time keeps a batch's latency to its own records.
    pub fn decode_next(
        &mut self,
        chunk: &[u8],
        origin: Origin<'_>,
        rejects: &mut dyn Rejects,
        out: &mut VecDeque<RecordBatch>,
    ) -> Result<usize, ArrowError> {
        self.kept = None;
        let fast = match self.format {
            RecordFormat::Csv { .. } => self
                .decode_batch(chunk)
                .ok()
                .filter(|(consumed, _)| self.short_lines(&chunk[..*consumed])),
            _ => self.decode_json_batch(chunk),
        };
        match fast {
            Some((consumed, batch)) => {
                out.extend(batch.filter(|b| b.num_rows() > 0));
                Ok(consumed)
            }
            None => {
                self.inner = build(
                    self.format,
                    &self.full_schema,
                    &self.decoded,
                    self.batch_size,
                )?;
                self.decode_lines(chunk, origin, rejects, out)
            }
        }
    }

    /// The fast path for JSON: the next batch's lines are looked at first
    /// (a long line is checked for its length and nesting depth, which
    /// could exhaust the stack), then decoded together; `None` sends the
    /// batch to the line-by-line path — also when a line held several
    /// values, which would make more rows than records and shift the rest.
    fn decode_json_batch(&mut self, chunk: &[u8]) -> Option<(usize, Option<RecordBatch>)> {
        if let Some(projected) = self.projected.as_mut() {
            let (size, max_bytes) = (self.batch_size, self.max_record_bytes);
            match guarded(|| Ok(projected.decode(chunk, size, max_bytes))) {
                Ok(Ok(decoded)) => {
                    // a time value that is not one fails the batch, as below
                    let batch = self.finish(decoded.batch).ok()?;
                    return Some((decoded.consumed, batch));
                }
                // arrow-json reads this batch
                Ok(Err(_declined)) => {}
                // a parser panicked part-way: the builders start afresh
                Err(_) => self.projected = ProjectedJson::new(&self.decoded),
            }
        }
        let mut records = 0;
        let mut start = 0;
        while start < chunk.len() && records < self.batch_size {
            let end = memchr::memchr(b'\n', &chunk[start..]).map_or(chunk.len(), |i| start + i);
            let line = &chunk[start..end];
            if self.refusal(line).is_some() {
                return None;
            }
            if line.iter().any(|b| !b.is_ascii_whitespace()) {
                records += 1;
            }
            start = (end + 1).min(chunk.len());
        }
        let (consumed, batch) = self.decode_batch(&chunk[..start]).ok()?;
        let rows = batch.as_ref().map_or(0, RecordBatch::num_rows);
        // every scanned line decoded, one row each
        let whole = chunk[consumed.min(start)..start]
            .iter()
            .all(u8::is_ascii_whitespace);
        (rows == records && whole).then_some((consumed, batch))
    }

    /// Whether no line of a CSV region is refused (longer than `max.record.bytes`).
    fn short_lines(&self, region: &[u8]) -> bool {
        if region.len() <= self.max_record_bytes {
            return true;
        }
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', region).chain([region.len()]) {
            if self.refusal(&region[start..end]).is_some() {
                return false;
            }
            start = end + 1;
        }
        true
    }

    /// Why a record is a bad record before it is decoded, if it is: longer
    /// than `max.record.bytes`, or JSON nesting deeper than
    /// [`MAX_JSON_DEPTH`] (only a long record can).
    fn refusal(&self, record: &[u8]) -> Option<String> {
        if record.len() > self.max_record_bytes {
            return Some(too_long(self.max_record_bytes));
        }
        let json = !matches!(self.format, RecordFormat::Csv { .. });
        (json && record.len() > MAX_JSON_DEPTH && nests_deeper(record)).then(|| {
            format!("the record nests arrays or objects deeper than {MAX_JSON_DEPTH} levels")
        })
    }

    /// One batch from the front of `buf`: bytes consumed and the batch.
    fn decode_batch(&mut self, buf: &[u8]) -> Result<(usize, Option<RecordBatch>), ArrowError> {
        let consumed = self.inner.decode(buf)?;
        let flushed = self.inner.flush()?;
        let batch = self.finish(flushed)?;
        Ok((consumed, batch))
    }

    /// A decoded batch in the output schema: time columns read from their text.
    fn finish(&self, batch: Option<RecordBatch>) -> Result<Option<RecordBatch>, ArrowError> {
        batch
            .map(|b| time::to_schema(b, &self.schema, &self.time_formats))
            .transpose()
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
        rejects: &mut dyn Rejects,
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
                let mut single = build(self.format, &self.full_schema, &self.decoded, 1)?;
                let decoded = match self.refusal(text) {
                    Some(reason) => Err(ArrowError::ParseError(reason)),
                    None => single.decode(text),
                }
                .and_then(|n| {
                    if n < text.len() && !text[n..].iter().all(u8::is_ascii_whitespace) {
                        return Err(ArrowError::ParseError(
                            "more than one record on the line".into(),
                        ));
                    }
                    self.finish(single.flush()?)
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
                        rejects.reject(DeadLetter {
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

/// Why a record longer than `max.record.bytes` is a bad record.
pub(crate) fn too_long(max_record_bytes: usize) -> String {
    format!("the record is longer than {max_record_bytes} bytes ('max.record.bytes')")
}

/// The deepest nesting of arrays and objects a JSON record may have:
/// decoding a value deeper than that could exhaust the thread's stack.
pub const MAX_JSON_DEPTH: usize = 1000;

/// Whether a JSON record nests deeper than [`MAX_JSON_DEPTH`] (brackets
/// inside strings do not count).
fn nests_deeper(record: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in record {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
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
