//! Planning of windowed queries. A windowed statement sees two more
//! columns on its source, `_window_start` and `_window_end`, and its GROUP
//! BY is extended with them; DataFusion then plans an ordinary aggregate
//! keyed by (group keys, window). At run time a WindowAssign operator fills
//! the two columns from each record's event time.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, GroupByExpr, Ident, Query, SetExpr};

use crate::error::{Result, SqlError};
use crate::plan::columns::{
    window_column_type, window_role, EVENT_TIME, WINDOW_END, WINDOW_ROLE, WINDOW_START,
};
use crate::plan::{SourceBinding, StreamNode};
use crate::window_clause::WindowSpec;

/// Column names of the table-function form (`TABLE(TUMBLE(...))`).
pub const TABLE_FUNCTION_COLUMNS: [&str; 2] = ["window_start", "window_end"];

/// `schema` plus the window columns (also under their table-function names
/// when `table_function`), each marked with its [`WINDOW_ROLE`].
pub fn with_window_columns(schema: &SchemaRef, table_function: bool) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut names = vec![(WINDOW_START, "start"), (WINDOW_END, "end")];
    if table_function {
        names.push((TABLE_FUNCTION_COLUMNS[0], "start"));
        names.push((TABLE_FUNCTION_COLUMNS[1], "end"));
    }
    for (name, role) in names {
        if schema.field_with_name(name).is_err() {
            let metadata = [(WINDOW_ROLE.to_string(), role.to_string())].into();
            fields.push(Field::new(name, window_column_type(), false).with_metadata(metadata));
        }
    }
    Arc::new(Schema::new(fields))
}

/// `schema` plus `_event_time` (marked with the [`WINDOW_ROLE`] `event_time`).
pub fn with_event_time_column(schema: &SchemaRef) -> SchemaRef {
    if schema.field_with_name(EVENT_TIME).is_ok() {
        return schema.clone();
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let metadata = [(WINDOW_ROLE.to_string(), "event_time".to_string())].into();
    fields.push(Field::new(EVENT_TIME, window_column_type(), true).with_metadata(metadata));
    Arc::new(Schema::new(fields))
}

/// `schema` with the window roles of its fields removed.
pub fn without_window_roles(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut metadata = f.metadata().clone();
            metadata.remove(WINDOW_ROLE);
            f.as_ref().clone().with_metadata(metadata)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Adds `_window_start, _window_end` to the query's GROUP BY.
pub fn group_by_window(query: &mut Query, window: &WindowSpec) -> Result<()> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(SqlError::new(
            "WINDOW applies to a single SELECT, not to UNION or VALUES",
            window.location,
        ));
    };
    let window_exprs = [WINDOW_START, WINDOW_END].map(|c| SqlExpr::Identifier(Ident::new(c)));
    match &mut select.group_by {
        GroupByExpr::Expressions(exprs, _) => {
            for w in window_exprs {
                if !exprs.contains(&w) {
                    exprs.push(w);
                }
            }
        }
        GroupByExpr::All(_) => {
            return Err(SqlError::new(
                "GROUP BY ALL cannot be combined with WINDOW",
                window.location,
            )
            .with_hint("name the group keys explicitly"))
        }
    }
    Ok(())
}

/// The source side of a windowed plan: a scan decoding the real columns the
/// query uses (plus the event-time column), under a WindowAssign producing
/// `projected` (which may include the window columns).
pub fn window_assign(
    binding: &SourceBinding,
    projected: SchemaRef,
    window: Option<&WindowSpec>,
) -> Result<StreamNode> {
    let location = window.map(|w| w.location).unwrap_or_default();
    // without an event-time field, a Kafka record's time is its message
    // timestamp; PROCTIME() windows read no time column (arrival time)
    let processing_time = window.is_some_and(|w| w.processing_time);
    let time_column = if processing_time {
        None
    } else {
        window
            .and_then(|w| w.time_column.clone())
            .or_else(|| binding.event_time.field.clone())
            .or_else(|| {
                binding
                    .schema
                    .field_with_name(crate::system_columns::TIMESTAMP)
                    .ok()
                    .map(|f| f.name().clone())
            })
    };
    let mut decode: Vec<Field> = projected
        .fields()
        .iter()
        .filter(|f| window_role(f).is_none())
        .map(|f| f.as_ref().clone())
        .collect();
    // the partition number, where the source has one, drives per-partition watermarks
    if let Ok(partition) = binding.schema.field_with_name("_partition") {
        if !decode.iter().any(|f| f.name() == "_partition") {
            decode.push(partition.clone());
        }
    }
    if let Some(column) = &time_column {
        let field = binding.schema.field_with_name(column).map_err(|_| {
            let columns: Vec<&str> = binding
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            SqlError::new(
                format!(
                    "window time column '{column}' is not a column of '{}'",
                    binding.name
                ),
                location,
            )
            .with_hint(format!("the columns are: {}", columns.join(", ")))
        })?;
        if !decode.iter().any(|f| f.name() == column) {
            decode.push(field.clone());
        }
    }
    Ok(StreamNode::WindowAssign {
        input: Box::new(StreamNode::Scan {
            source: binding.name.clone(),
            schema: Arc::new(Schema::new(decode)),
        }),
        window: window.cloned(),
        time_column,
        event_time: binding.event_time.clone(),
        schema: projected,
    })
}
