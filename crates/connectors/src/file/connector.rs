//! The file and standard-stream connectors: `file_source`, `stdin`,
//! `file_sink` and `stdout`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Cursor, Read};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use velostream_engine::{JobMetrics, Result, Sink, Source};
use velostream_sql::{SinkBinding, SourceBinding};

use crate::connector::{check_keys, types, Connector, Role};
use crate::context::{Connectors, Guarantee};
use crate::error::{ConnectorError, ConnectorResult};
use crate::file::committed::FileSink;
use crate::file::reader::{LineSource, DEFAULT_MAX_RECORD_BYTES};
use crate::file::stdout::WriterSink;
use crate::format::decode::BatchDecoder;
use crate::format::infer::infer_schema;
use crate::format::RecordFormat;
use crate::keys::Key;

const FORMAT: Key = Key::new(
    "format",
    "`jsonl`, `json` (an array), `csv` or `csv_no_header`; guessed from the path's extension, else `jsonl`",
);
const DELIMITER: Key = Key::with_default(
    "delimiter",
    ",",
    "the CSV delimiter: one character, or `tab`",
);
const MAX_RECORD_BYTES: Key = Key::with_default(
    "max.record.bytes",
    "16777216",
    "a longer record is a malformed record",
);

/// The keys every source of records in lines has.
const LINE_SOURCE_KEYS: [Key; 4] = [
    Key::new("type", "the connector"),
    Key::with_default(
        "format",
        "jsonl",
        "`jsonl`, `json` (an array), `csv` or `csv_no_header`",
    ),
    DELIMITER,
    MAX_RECORD_BYTES,
];

/// `file_source`: a file of records, read once.
pub struct FileSourceConnector;

impl Connector for FileSourceConnector {
    fn name(&self) -> &'static str {
        types::FILE_SOURCE
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["file"]
    }

    fn role(&self) -> Role {
        Role::Source
    }

    fn summary(&self) -> &'static str {
        "a file of JSON Lines, a JSON array or CSV"
    }

    fn behaviour(&self) -> &'static str {
        "Bounded: the job ends when the file is read. A relative path is relative to the application's `.sql` file; the service confines paths to its sandbox."
    }

    fn essential_settings(&self, name: &str) -> String {
        format!("'{name}.path' and '{name}.format'")
    }

    fn keys(&self) -> &'static [Key] {
        const KEYS: [Key; 5] = [
            LINE_SOURCE_KEYS[0],
            Key::new("path", "the file to read"),
            FORMAT,
            DELIMITER,
            MAX_RECORD_BYTES,
        ];
        &KEYS
    }

    fn infer_schema(
        &self,
        cx: &Connectors,
        _name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<SchemaRef> {
        let format = RecordFormat::from_properties(props)?;
        check_keys(props, self)?;
        let path = cx.path(props, self.name())?;
        let file = File::open(&path).map_err(|source| ConnectorError::Io {
            what: format!("cannot open {}", path.display()),
            source,
        })?;
        Ok(Arc::new(infer_schema(format, file)?))
    }

    fn open_source(
        &self,
        cx: &Connectors,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        let props = &binding.properties;
        let err = |e: ConnectorError| e.at(&binding.name);
        let (format, decoder) = line_decoder(cx, binding, projected)?;
        check_keys(props, self).map_err(err)?;
        let path = cx.path(props, self.name()).map_err(err)?;
        let max = max_record_bytes(props).map_err(err)?;
        Ok(Box::new(
            LineSource::open_file(&path, format, decoder, metrics)?
                .with_max_record_bytes(max)
                .with_decode_threads(cx.decode_threads, cx.decode_chunk_bytes),
        ))
    }

    fn check(
        &self,
        cx: &Connectors,
        _name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<()> {
        check_keys(props, self)?;
        cx.path(props, self.name()).map(|_| ())
    }
}

/// `stdin`: records piped to the process.
pub struct Stdin;

impl Connector for Stdin {
    fn name(&self) -> &'static str {
        types::STDIN
    }

    fn role(&self) -> Role {
        Role::Source
    }

    fn summary(&self) -> &'static str {
        "records piped to standard input"
    }

    fn behaviour(&self) -> &'static str {
        "Bounded: the job ends when the input is closed. Schema inference samples the first records and replays them."
    }

    fn keys(&self) -> &'static [Key] {
        &LINE_SOURCE_KEYS
    }

    fn essential_settings(&self, name: &str) -> String {
        format!("'{name}.format'")
    }

    fn single_reader(&self) -> bool {
        true
    }

    fn infer_schema(
        &self,
        cx: &Connectors,
        _name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<SchemaRef> {
        let format = RecordFormat::from_properties(props)?;
        check_keys(props, self)?;
        let sample = cx.sample_stdin()?;
        Ok(Arc::new(infer_schema(format, Cursor::new(sample))?))
    }

    fn open_source(
        &self,
        cx: &Connectors,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        let props = &binding.properties;
        let err = |e: ConnectorError| e.at(&binding.name);
        let (format, decoder) = line_decoder(cx, binding, projected)?;
        check_keys(props, self).map_err(err)?;
        let reader = Cursor::new(cx.take_stdin_sample()).chain(std::io::stdin());
        let max = max_record_bytes(props).map_err(err)?;
        Ok(Box::new(
            LineSource::new("stdin".into(), Box::new(reader), format, decoder, metrics)
                .with_max_record_bytes(max),
        ))
    }

    fn check(
        &self,
        _cx: &Connectors,
        _name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<()> {
        check_keys(props, self)
    }
}

/// The record format and a decoder of `projected` for a source of lines.
fn line_decoder(
    cx: &Connectors,
    binding: &SourceBinding,
    projected: SchemaRef,
) -> Result<(RecordFormat, BatchDecoder)> {
    let format =
        RecordFormat::from_properties(&binding.properties).map_err(|e| e.at(&binding.name))?;
    let decoder = BatchDecoder::new(format, binding.schema.clone(), projected, cx.batch_size)?
        .with_time_formats(binding.time_formats.clone());
    Ok((format, decoder))
}

/// `max.record.bytes`: the longest record a line source accepts (16 MiB
/// unless set); a longer one is one bad record.
fn max_record_bytes(props: &BTreeMap<String, String>) -> ConnectorResult<usize> {
    match props.get("max.record.bytes") {
        None => Ok(DEFAULT_MAX_RECORD_BYTES),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                ConnectorError::InvalidValue(format!(
                    "'max.record.bytes' = '{v}' is not a positive number of bytes"
                ))
            }),
    }
}

/// `file_sink`: results written to a file.
pub struct FileSinkConnector;

impl Connector for FileSinkConnector {
    fn name(&self) -> &'static str {
        types::FILE_SINK
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["file"]
    }

    fn role(&self) -> Role {
        Role::Sink
    }

    fn summary(&self) -> &'static str {
        "results written to a file as JSON Lines or CSV"
    }

    fn behaviour(&self) -> &'static str {
        "At least once: after a restart the file is truncated back to the last checkpoint's length. Exactly once: results are staged and published with each checkpoint."
    }

    fn keys(&self) -> &'static [Key] {
        const KEYS: [Key; 5] = [
            Key::new("type", "the connector"),
            Key::new("path", "the file to write"),
            Key::new("format", "`jsonl` or `csv`; guessed from the path's extension, else `jsonl`"),
            DELIMITER,
            Key::new(
                "append",
                "`true` keeps what the file holds; `false` replaces it (default `false`, and `true` in the service)",
            ),
        ];
        &KEYS
    }

    fn open_sink(
        &self,
        cx: &Connectors,
        binding: &SinkBinding,
        _key: &[String],
        guarantee: Guarantee,
    ) -> Result<Box<dyn Sink>> {
        let props = &binding.properties;
        let err = |e: ConnectorError| e.at(&binding.name);
        let format = RecordFormat::from_properties(props).map_err(err)?;
        check_keys(props, self).map_err(err)?;
        let path = cx.path(props, self.name()).map_err(err)?;
        let append = match props.get("append").map(String::as_str) {
            None => cx.append_by_default,
            Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(err(ConnectorError::InvalidValue(format!(
                    "'append' must be true or false, got '{other}'"
                ))))
            }
        };
        Ok(Box::new(FileSink::new(
            &path,
            format,
            append,
            guarantee == Guarantee::ExactlyOnce,
        )?))
    }

    fn check(
        &self,
        cx: &Connectors,
        _name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<()> {
        RecordFormat::from_properties(props)?;
        check_keys(props, self)?;
        cx.path(props, self.name()).map(|_| ())
    }
}

/// `stdout`: results printed; the sink of a statement without one.
pub struct Stdout;

impl Connector for Stdout {
    fn name(&self) -> &'static str {
        types::STDOUT
    }

    fn role(&self) -> Role {
        Role::Sink
    }

    fn summary(&self) -> &'static str {
        "results printed to standard output (the default sink)"
    }

    fn behaviour(&self) -> &'static str {
        "At least once only: printed results cannot be taken back after a crash."
    }

    fn keys(&self) -> &'static [Key] {
        const KEYS: [Key; 3] = [
            Key::new("type", "the connector"),
            Key::with_default("format", "jsonl", "`jsonl` or `csv`"),
            DELIMITER,
        ];
        &KEYS
    }

    fn open_sink(
        &self,
        _cx: &Connectors,
        binding: &SinkBinding,
        _key: &[String],
        guarantee: Guarantee,
    ) -> Result<Box<dyn Sink>> {
        let props = &binding.properties;
        let err = |e: ConnectorError| e.at(&binding.name);
        let format = RecordFormat::from_properties(props).map_err(err)?;
        check_keys(props, self).map_err(err)?;
        if guarantee == Guarantee::ExactlyOnce {
            return Err(err(ConnectorError::InvalidValue(
                "results printed to stdout cannot be taken back after a crash, so they cannot be exactly-once; write them to a file_sink or kafka_sink, or use at_least_once".into(),
            )));
        }
        Ok(Box::new(WriterSink::stdout(format)))
    }

    fn check(
        &self,
        _cx: &Connectors,
        _name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<()> {
        RecordFormat::from_properties(props)?;
        check_keys(props, self)
    }
}
