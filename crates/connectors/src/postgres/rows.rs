//! How rows cross between PostgreSQL and Arrow. Reading, the server turns
//! each row into one JSON object (`row_to_json`), and the shared JSON
//! decoder builds the batch: numbers keep their exact digits (NUMERIC
//! becomes an exact DECIMAL), times arrive in ISO 8601, and a row that
//! does not fit its column types is reported like any malformed record.
//! Writing, a batch is sent as one JSON array that the server spreads over
//! the table's columns (`json_populate_recordset`): one statement per batch.
//!
//! Schemas of undeclared sources come from the server's column types.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use postgres::types::Type;
use postgres::Client;
use velostream_engine::JobMetrics;

use super::connection::quote;
use super::error::PostgresError;
use crate::format::decode::{BatchDecoder, Origin};
use crate::format::RecordFormat;

/// The columns a query produces, as the server describes them.
pub struct ServerColumn {
    pub name: String,
    /// The type's SQL name (`int8`, `numeric`, `public.mood`), usable in casts.
    pub type_name: String,
    pub arrow: DataType,
}

/// Describes the columns of `base` (a `SELECT`) without running it.
pub fn describe_columns(
    client: &mut Client,
    base: &str,
) -> Result<Vec<ServerColumn>, PostgresError> {
    let statement = client
        .prepare(&format!("SELECT * FROM ({base}) q LIMIT 0"))
        .map_err(|e| PostgresError::server("cannot describe the columns of the source", &e))?;
    let mut columns = Vec::new();
    for c in statement.columns() {
        let ty = c.type_();
        let arrow = match *ty {
            Type::BOOL => DataType::Boolean,
            Type::INT2 => DataType::Int16,
            Type::INT4 => DataType::Int32,
            Type::INT8 | Type::OID => DataType::Int64,
            Type::FLOAT4 => DataType::Float32,
            Type::FLOAT8 => DataType::Float64,
            Type::NUMERIC => numeric_type(client, c.table_oid(), c.column_id())?,
            Type::DATE => DataType::Date32,
            Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Nanosecond, None),
            Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
            // text, varchar, uuid, json, time, interval, arrays, enums: as text
            _ => DataType::Utf8,
        };
        let type_name = match ty.schema() {
            "pg_catalog" => ty.name().to_string(),
            schema => format!("{}.{}", quote(schema), quote(ty.name())),
        };
        columns.push(ServerColumn {
            name: c.name().to_string(),
            type_name,
            arrow,
        });
    }
    Ok(columns)
}

/// DECIMAL(p, s) of a NUMERIC table column; a NUMERIC without declared
/// precision (or computed by a query) reads as DECIMAL(38, 10).
fn numeric_type(
    client: &mut Client,
    table: Option<u32>,
    column: Option<i16>,
) -> Result<DataType, PostgresError> {
    let unconstrained = DataType::Decimal128(38, 10);
    let (Some(table), Some(column)) = (table, column) else {
        return Ok(unconstrained);
    };
    let row = client
        .query_opt(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = $1 AND attnum = $2",
            &[&table, &column],
        )
        .map_err(|e| PostgresError::server("cannot read the precision of a NUMERIC column", &e))?;
    let typmod: i32 = row.map(|r| r.get(0)).unwrap_or(-1);
    if typmod < 4 {
        return Ok(unconstrained);
    }
    let precision = ((typmod - 4) >> 16) & 0xffff;
    let scale = (typmod - 4) & 0xffff;
    if precision > 38 || scale > precision {
        return Ok(unconstrained);
    }
    Ok(DataType::Decimal128(precision as u8, scale as i8))
}

/// The schema of an undeclared source reading `base`.
pub fn schema_of(columns: &[ServerColumn]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.arrow.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// The select list that makes a row of `q` into the JSON the decoder reads
/// for `schema`: text columns are cast to text (a JSON or enum value reads
/// as its text), the rest keep their type so numbers stay numbers.
pub fn json_select_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            let column = format!("q.{}", quote(f.name()));
            match f.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    format!("{column}::text AS {}", quote(f.name()))
                }
                _ => format!("{column} AS {}", quote(f.name())),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `batch` as one JSON array of objects (nulls written out, decimals with
/// their exact digits): the form the server spreads over columns
/// (`json_populate_recordset`, `json_to_recordset`), so a whole batch
/// travels as one parameter.
pub fn json_array(batch: &RecordBatch) -> Result<String, PostgresError> {
    let encoding = |e: &dyn std::fmt::Display| {
        PostgresError::Encoding(format!("cannot encode rows as JSON: {e}"))
    };
    let mut out = Vec::new();
    {
        let mut writer = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow_json::writer::JsonArray>(&mut out);
        writer.write(batch).map_err(|e| encoding(&e))?;
        writer.finish().map_err(|e| encoding(&e))?;
    }
    if out.is_empty() {
        return Ok("[]".into());
    }
    String::from_utf8(out).map_err(|e| encoding(&e))
}

/// Decodes rows fetched as JSON text into one batch of `schema`; rows that
/// do not fit are counted and reported as `<source>:<row number>`.
pub struct JsonRows {
    decoder: BatchDecoder,
    schema: SchemaRef,
    name: String,
    buf: Vec<u8>,
    out: VecDeque<RecordBatch>,
}

impl JsonRows {
    pub fn new(
        name: &str,
        full: SchemaRef,
        schema: SchemaRef,
        batch_size: usize,
    ) -> velostream_engine::Result<Self> {
        let decoder = BatchDecoder::new(
            RecordFormat::JsonLines,
            full,
            schema.clone(),
            batch_size.max(1),
        )?;
        Ok(Self {
            decoder,
            schema,
            name: name.to_string(),
            buf: Vec::new(),
            out: VecDeque::new(),
        })
    }

    /// The schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The batch of `rows` (JSON objects); `first_row` numbers them in reports.
    pub fn decode<'a>(
        &mut self,
        rows: impl Iterator<Item = &'a str>,
        first_row: u64,
        metrics: &JobMetrics,
    ) -> velostream_engine::Result<RecordBatch> {
        self.buf.clear();
        for row in rows {
            self.buf.extend_from_slice(row.as_bytes());
            self.buf.push(b'\n');
        }
        let mut pos = 0;
        let mut line = first_row;
        while pos < self.buf.len() {
            let origin = Origin::Lines {
                name: &self.name,
                first_line: line,
            };
            let consumed = self.decoder.decode_next(
                &self.buf[pos..],
                origin,
                &mut { metrics },
                &mut self.out,
            )?;
            if consumed == 0 {
                break;
            }
            line += self.buf[pos..pos + consumed]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
            pos += consumed;
        }
        let batches: Vec<RecordBatch> = self.out.drain(..).collect();
        Ok(concat_batches(&self.schema, &batches)?)
    }
}
