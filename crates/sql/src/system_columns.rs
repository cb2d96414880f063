//! Columns a connector adds to every record besides its payload: for
//! records of a message log (Kafka) `_key`, `_partition`, `_offset`,
//! `_timestamp`, `_topic` and `_headers` (read with `HEADER('name')`).
//! They can be selected by name but `SELECT *` leaves them out. Which
//! connector adds which is the connector's to say (its
//! [`SourceTraits`](crate::plan::SourceTraits)).

use std::sync::Arc;

use datafusion::arrow::array::{Array, MapBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::sql::sqlparser::ast::{
    ExcludeSelectItem, Ident, ObjectName, Query, SelectItem, SetExpr,
};

/// The message timestamp column, the default event time of Kafka sources.
pub const TIMESTAMP: &str = "_timestamp";
pub const HEADERS: &str = "_headers";

/// The system columns of a record from a message log (Kafka): its key,
/// partition, offset, timestamp, topic and headers.
pub fn message_columns() -> Vec<Field> {
    vec![
        Field::new("_key", DataType::Utf8, true),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new(
            TIMESTAMP,
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("_topic", DataType::Utf8, false),
        Field::new(HEADERS, headers_type(), true),
    ]
}

/// `Map<Utf8, Utf8>` as Arrow's map builder makes it.
pub fn headers_type() -> DataType {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
        .finish()
        .data_type()
        .clone()
}

/// `schema` plus the system columns in `columns` it does not have yet.
pub fn with_system_columns(schema: &SchemaRef, columns: &[Field]) -> SchemaRef {
    let extra: Vec<Field> = columns
        .iter()
        .filter(|f| schema.field_with_name(f.name()).is_err())
        .cloned()
        .collect();
    if extra.is_empty() {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .chain(extra)
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// True for the name of a system column of any connector.
pub fn is_system_column(name: &str) -> bool {
    message_columns().iter().any(|f| f.name() == name)
}

/// Adds `EXCLUDE (<system columns>)` to the wildcards of the outer SELECT
/// (`present` = the system columns of its sources).
pub fn exclude_from_wildcards(query: &mut Query, present: &[String]) {
    if present.is_empty() {
        return;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let names: Vec<ObjectName> = present
        .iter()
        .map(|n| ObjectName::from(vec![Ident::new(n)]))
        .collect();
    for item in &mut select.projection {
        let options = match item {
            SelectItem::Wildcard(o) => o,
            SelectItem::QualifiedWildcard(_, o) => o,
            _ => continue,
        };
        let mut excluded = match options.opt_exclude.take() {
            Some(ExcludeSelectItem::Single(n)) => vec![n],
            Some(ExcludeSelectItem::Multiple(ns)) => ns,
            None => Vec::new(),
        };
        for n in &names {
            if !excluded.contains(n) {
                excluded.push(n.clone());
            }
        }
        options.opt_exclude = Some(ExcludeSelectItem::Multiple(excluded));
    }
}
