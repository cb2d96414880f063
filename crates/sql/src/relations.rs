//! The relations a query names: the sources in its FROM and JOIN clauses,
//! and the dead-letter relation a statement's properties may address.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{visit_relations, Ident, ObjectName};

use crate::error::Location;

/// The relation name under which a statement configures its dead-letter
/// sink: `WITH ('dead_letter.type' = 'file_sink', 'dead_letter.path' = ...)`.
pub const DEAD_LETTER: &str = "dead_letter";

/// An identifier as a relation name: quoted ones keep their case.
fn ident_name(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// Relations named in FROM/JOIN clauses (not CTE names), first use first.
pub(crate) fn referenced_relations(
    query: &datafusion::sql::sqlparser::ast::Query,
) -> Vec<(String, Location)> {
    let ctes: HashSet<String> = query
        .with
        .iter()
        .flat_map(|w| w.cte_tables.iter().map(|c| ident_name(&c.alias.name)))
        .collect();
    let mut out: Vec<(String, Location)> = Vec::new();
    let _ = visit_relations(query, |name: &ObjectName| {
        if let Some(ident) = name.0.last().and_then(|p| p.as_ident()) {
            let n = ident_name(ident);
            if !ctes.contains(&n) && !out.iter().any(|(seen, _)| *seen == n) {
                out.push((n, Location::from_sqlparser(ident.span.start)));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    out
}
