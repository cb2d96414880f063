//! Time clauses of joins in the Velostream dialect, lifted out of the token
//! stream and turned into standard join conditions over the sources'
//! event-time columns before DataFusion plans the query:
//!
//! - `JOIN shipments s WITHIN 1h ON o.id = s.id` — an interval join whose
//!   records meet when their event times are at most the duration apart;
//!   becomes the marker `AND velostream_within(s.<time>, o.<time>, 3600000)`,
//!   from which lowering takes the bounds as they were written
//!   ([`crate::within_marker`]).
//! - `JOIN rates FOR SYSTEM_TIME AS OF o.at AS r ON o.cur = r.cur` — a
//!   versioned table join: each record meets the version of the table row
//!   that was current at its time (the latest with a table time at or
//!   before it); becomes `AND r.<time> <= o.at`, and the table is marked
//!   versioned so that lowering keeps only the latest such version.

use std::time::Duration;

use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, JoinConstraint, JoinOperator, Query, SetExpr, TableFactor,
    Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{Location, Result, SqlError};
use crate::plan::SourceBinding;
use crate::script::{is_word, loc};
use crate::window_clause::duration_arg;
use crate::within_marker;

/// A time clause and the join (by position in the outer FROM) it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinTimeClause {
    /// 0 for the first `JOIN` of the outer query, 1 for the second, ...
    pub join: usize,
    pub time: JoinTime,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JoinTime {
    /// `WITHIN <duration>`: event times at most this far apart.
    Within(Duration),
    /// `FOR SYSTEM_TIME AS OF <column>`: the table version current at the column's time.
    AsOf(String),
}

/// A table side joined `FOR SYSTEM_TIME AS OF`: its qualifier in the query
/// and its event-time column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedTable {
    pub qualifier: String,
    pub time_column: String,
}

/// Recognises a time clause at `tokens[i]` of the outer query; `joins` is
/// the number of `JOIN` keywords seen so far. Returns the clause and the
/// index after it.
pub(crate) fn lift(
    tokens: &[TokenWithSpan],
    i: usize,
    joins: usize,
) -> Result<Option<(JoinTimeClause, usize)>> {
    let t = &tokens[i];
    let word = |k: usize, w: &str| tokens.get(k).is_some_and(|t| is_word(&t.token, w));
    let within = word(i, "WITHIN") && !word(i + 1, "GROUP");
    let as_of =
        word(i, "FOR") && word(i + 1, "SYSTEM_TIME") && word(i + 2, "AS") && word(i + 3, "OF");
    if !within && !as_of {
        return Ok(None);
    }
    if joins == 0 {
        return Err(
            SqlError::new("WITHIN and FOR SYSTEM_TIME AS OF belong to a JOIN", loc(t))
                .with_hint("write FROM a JOIN b WITHIN 1h ON a.key = b.key"),
        );
    }
    let (time, next) = if within {
        let end = (i + 1..tokens.len())
            .find(|&k| word(k, "ON") || word(k, "USING"))
            .ok_or_else(|| {
                SqlError::new("expected ON after the WITHIN duration", loc(t))
                    .with_hint("write JOIN other WITHIN 1h ON a.key = other.key")
            })?;
        (JoinTime::Within(duration_arg(&tokens[i + 1..end])?), end)
    } else {
        let mut k = i + 4;
        let mut column = Vec::new();
        while let Some(Token::Word(w)) = tokens.get(k).map(|t| &t.token) {
            column.push(w.value.clone());
            if !matches!(tokens.get(k + 1).map(|t| &t.token), Some(Token::Period)) {
                break;
            }
            k += 2;
        }
        if column.is_empty() {
            return Err(SqlError::new(
                "expected a time column after FOR SYSTEM_TIME AS OF",
                tokens.get(i + 4).map(loc).unwrap_or(loc(t)),
            )
            .with_hint("write JOIN rates FOR SYSTEM_TIME AS OF o.event_time AS r ON ..."));
        }
        (JoinTime::AsOf(column.join(".")), k + 1)
    };
    let clause = JoinTimeClause {
        join: joins - 1,
        time,
        location: loc(t),
    };
    Ok(Some((clause, next)))
}

/// Adds each clause's condition to its join in the outer query. Returns the
/// tables joined `FOR SYSTEM_TIME AS OF`.
pub(crate) fn apply(
    query: &mut Query,
    clauses: &[JoinTimeClause],
    sources: &[SourceBinding],
) -> Result<Vec<VersionedTable>> {
    let Some(first) = clauses.first() else {
        return Ok(Vec::new());
    };
    let outer_only = || {
        SqlError::new(
            "WITHIN and FOR SYSTEM_TIME AS OF are supported on the joins of the outer FROM",
            first.location,
        )
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(outer_only());
    };
    let [from] = select.from.as_mut_slice() else {
        return Err(outer_only());
    };
    let stream = relation(&from.relation, sources).ok_or_else(outer_only)?;
    let mut versioned = Vec::new();
    for clause in clauses {
        let join = from.joins.get_mut(clause.join).ok_or_else(outer_only)?;
        let table = relation(&join.relation, sources).ok_or_else(outer_only)?;
        let table_time = time_column(&table, clause)?;
        let condition = match &clause.time {
            JoinTime::Within(d) => {
                let stream_time = time_column(&stream, clause)?;
                within_marker::condition(&table_time, &stream_time, d.as_millis())
            }
            JoinTime::AsOf(column) => {
                versioned.push(VersionedTable {
                    qualifier: table.qualifier.clone(),
                    time_column: table.time_field.clone().unwrap_or_default(),
                });
                format!("{table_time} <= {column}")
            }
        };
        let condition = Parser::new(&GenericDialect {})
            .try_with_sql(&condition)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| SqlError::new(format!("join time condition: {e}"), clause.location))?;
        let on = constraint(&mut join.join_operator).ok_or_else(|| {
            SqlError::new(
                "a join with WITHIN or FOR SYSTEM_TIME AS OF needs ON <keys>",
                clause.location,
            )
        })?;
        let keys = std::mem::replace(on, SqlExpr::Value(Value::Null.into()));
        *on = SqlExpr::BinaryOp {
            left: Box::new(SqlExpr::Nested(Box::new(keys))),
            op: BinaryOperator::And,
            right: Box::new(condition),
        };
    }
    Ok(versioned)
}

/// A relation of the FROM clause: how the query names it and its event-time column.
struct Relation {
    source: String,
    qualifier: String,
    time_field: Option<String>,
    time_type: Option<DataType>,
}

fn relation(factor: &TableFactor, sources: &[SourceBinding]) -> Option<Relation> {
    let TableFactor::Table { name, alias, .. } = factor else {
        return None;
    };
    let ident = name.0.last()?.as_ident()?;
    let source = match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    };
    let binding = sources.iter().find(|b| b.name == source)?;
    let field = binding.event_time.field.clone();
    Some(Relation {
        qualifier: match alias {
            Some(a) if a.name.quote_style.is_some() => a.name.value.clone(),
            Some(a) => a.name.value.to_lowercase(),
            None => source.clone(),
        },
        time_type: field.as_ref().and_then(|f| {
            binding
                .schema
                .field_with_name(f)
                .ok()
                .map(|f| f.data_type().clone())
        }),
        time_field: field,
        source,
    })
}

/// `qualifier."field"`, or an error saying the source needs an event-time
/// column of a time type.
fn time_column(relation: &Relation, clause: &JoinTimeClause) -> Result<String> {
    let (Some(field), Some(data_type)) = (&relation.time_field, &relation.time_type) else {
        return Err(SqlError::new(
            format!(
                "source '{}' has no event-time column for this join's time clause",
                relation.source
            ),
            clause.location,
        )
        .with_hint(format!(
            "declare it with WITH ('{}.event.time.field' = '<column>')",
            relation.source
        )));
    };
    let time = matches!(data_type, DataType::Timestamp(..)) || data_type.is_integer();
    if !time {
        return Err(SqlError::new(
            format!(
                "the event-time column '{field}' of '{}' is {data_type}; a join time clause needs TIMESTAMP or epoch-millisecond integers",
                relation.source
            ),
            clause.location,
        )
        .with_hint(format!(
            "declare the source's columns with CREATE STREAM {} ({field} TIMESTAMP, ...)",
            relation.source
        )));
    }
    Ok(format!("\"{}\".\"{field}\"", relation.qualifier))
}

/// The ON condition of a join, if it has one.
fn constraint(op: &mut JoinOperator) -> Option<&mut SqlExpr> {
    let c = match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c) => c,
        _ => return None,
    };
    match c {
        JoinConstraint::On(e) => Some(e),
        _ => None,
    }
}
