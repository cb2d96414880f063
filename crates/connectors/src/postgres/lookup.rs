//! A PostgreSQL table on the table side of a join: rows are fetched for the
//! keys a batch needs, in one query per batch — the keys travel as one JSON
//! array, joined to the table on the server (`json_to_recordset`), so an
//! index on the key columns serves the lookup. The join caches the answers
//! (`performance.cache`).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use postgres::{Client, Statement};
use velostream_engine::connector::KeyLookup;
use velostream_engine::{EngineError, JobMetrics, Result};

use super::connection::quote;
use super::error::engine_error;
use super::rows::{json_array, json_select_list, JsonRows, ServerColumn};

pub struct PostgresLookup {
    name: String,
    client: Client,
    base: String,
    /// The table's columns as the server describes them (key types for the casts).
    columns: Vec<ServerColumn>,
    schema: SchemaRef,
    rows: JsonRows,
    metrics: Arc<JobMetrics>,
    /// The prepared query, for the key columns it was prepared with.
    prepared: Option<(Vec<String>, Statement)>,
    fetched_rows: u64,
}

impl PostgresLookup {
    pub fn new(
        name: &str,
        client: Client,
        base: String,
        columns: Vec<ServerColumn>,
        full: SchemaRef,
        schema: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Self> {
        let rows = JsonRows::new(name, full, schema.clone(), 8192)?;
        Ok(Self {
            name: name.to_string(),
            client,
            base,
            columns,
            schema,
            rows,
            metrics,
            prepared: None,
            fetched_rows: 0,
        })
    }

    fn statement(&mut self, key_columns: &[String]) -> Result<Statement> {
        if let Some((cols, statement)) = &self.prepared {
            if cols == key_columns {
                return Ok(statement.clone());
            }
        }
        let mut definitions = Vec::new();
        let mut conditions = Vec::new();
        for key in key_columns {
            let column = self
                .columns
                .iter()
                .find(|c| &c.name == key)
                .ok_or_else(|| {
                    EngineError::connector(
                        &self.name,
                        format!("the join key '{key}' is not a column of the table"),
                    )
                })?;
            definitions.push(format!("{} {}", quote(key), column.type_name));
            conditions.push(format!("q.{0} = k.{0}", quote(key)));
        }
        let sql = format!(
            "SELECT row_to_json(x)::text FROM ({base}) q \
             JOIN json_to_recordset($1::text::json) AS k({definitions}) ON {conditions} \
             CROSS JOIN LATERAL (SELECT {select}) x",
            base = self.base,
            definitions = definitions.join(", "),
            conditions = conditions.join(" AND "),
            select = json_select_list(&self.schema),
        );
        let statement = self
            .client
            .prepare(&sql)
            .map_err(|e| engine_error(&self.name, &e))?;
        self.prepared = Some((key_columns.to_vec(), statement.clone()));
        Ok(statement)
    }
}

impl KeyLookup for PostgresLookup {
    fn fetch(&mut self, columns: &[String], keys: &[ArrayRef]) -> Result<RecordBatch> {
        let statement = self.statement(columns)?;
        let key_schema = Arc::new(Schema::new(
            columns
                .iter()
                .zip(keys)
                .map(|(c, k)| Field::new(c, k.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(key_schema, keys.to_vec())?;
        let text = json_array(&batch).map_err(|e| e.at(&self.name))?;
        let fetched = self
            .client
            .query(&statement, &[&text])
            .map_err(|e| engine_error(&self.name, &e))?;
        let texts: Vec<String> = fetched.iter().map(|r| r.get(0)).collect();
        let first = self.fetched_rows + 1;
        self.fetched_rows += texts.len() as u64;
        self.rows
            .decode(texts.iter().map(String::as_str), first, &self.metrics)
    }
}
