//! Plans an application: resolves every statement's sources (declared,
//! configured by properties, or the output of an earlier statement), plans
//! the standard SELECT with DataFusion's SQL planner and optimizer, and maps
//! the optimized logical plan onto streaming operators.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::planner::{ParserOptions, SqlToRel};
use datafusion::sql::sqlparser::ast::{
    visit_expressions, Expr as SqlExprNode, GroupByExpr, Query, SetExpr, Statement as SqlStatement,
};

use crate::catalog::{streaming_session_state, StatementCatalog};
use crate::epoch_time::with_epoch_units;
use crate::error::{df_error, Location, Result, SqlError};
use crate::event_time::{EventTime, EVENT_TIME_KEYS};
use crate::header_function;
use crate::join_time;
use crate::lowering::NodeMapper;
use crate::plan::columns::EVENT_TIME;
use crate::plan::{
    SinkBinding, SourceBinding, SourceOrigin, SourceTraits, StreamNode, StreamingPlan,
};
use crate::script::split_statements;
use crate::standard_functions;
use crate::statement::{parse_statement, ParsedStatement, StatementKind};
use crate::system_columns;
use crate::time_format::TimeFormats;
use crate::window_clause::EmitMode;
use crate::windowing::{
    group_by_window, with_event_time_column, with_window_columns, without_window_roles,
};

use crate::relations::referenced_relations;
pub use crate::relations::DEAD_LETTER;

/// Why the columns of an undeclared source could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InferError {
    pub message: String,
    /// It may pass (a broker or database not reachable yet), so planning
    /// the application again may succeed.
    pub transient: bool,
}

impl From<String> for InferError {
    /// A lasting failure: the settings or the data are wrong.
    fn from(message: String) -> Self {
        Self {
            message,
            transient: false,
        }
    }
}

/// Supplies schemas of external sources that do not declare one, by
/// looking at their data (the connectors implement this).
pub trait SourceResolver {
    /// Infers the schema of source `name` configured by `properties`.
    fn infer_schema(
        &self,
        name: &str,
        properties: &BTreeMap<String, String>,
    ) -> std::result::Result<SchemaRef, InferError>;

    /// What the connector of source `name` says about it (nothing special
    /// unless overridden).
    fn traits(&self, name: &str, properties: &BTreeMap<String, String>) -> SourceTraits {
        let _ = (name, properties);
        SourceTraits::default()
    }
}

/// Parses every statement of an application script.
pub fn parse_application(text: &str) -> Result<Vec<ParsedStatement>> {
    let mut statements = Vec::new();
    for (i, raw) in split_statements(text)?.into_iter().enumerate() {
        statements.extend(parse_statement(statements.len(), i + 1, raw)?);
    }
    Ok(statements)
}

/// Plans an application into one streaming plan per query statement.
pub struct ApplicationPlanner<'a> {
    state: SessionState,
    resolver: &'a dyn SourceResolver,
    declared: HashMap<String, (SchemaRef, &'a ParsedStatement)>,
    outputs: HashMap<String, (usize, SchemaRef)>,
    overrides: HashMap<String, BTreeMap<String, String>>,
}

/// Properties given outside the SQL (command line, test harness), by
/// relation name; they win over the statement's own.
pub type PropertyOverrides = HashMap<String, BTreeMap<String, String>>;

impl<'a> ApplicationPlanner<'a> {
    pub fn new(resolver: &'a dyn SourceResolver) -> Self {
        Self {
            state: streaming_session_state(),
            resolver,
            declared: HashMap::new(),
            outputs: HashMap::new(),
            overrides: HashMap::new(),
        }
    }

    /// Properties that replace or extend those written in the SQL.
    pub fn with_overrides(mut self, overrides: PropertyOverrides) -> Self {
        self.overrides = overrides
            .into_iter()
            .map(|(k, v)| (normalize(&k), v))
            .collect();
        self
    }

    fn overridden(
        &self,
        name: &str,
        mut properties: BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        if let Some(extra) = self.overrides.get(&normalize(name)) {
            properties.extend(extra.clone());
        }
        properties
    }

    /// Plans all statements in order; later statements may read the streams
    /// earlier ones create.
    pub fn plan(mut self, statements: &'a [ParsedStatement]) -> Result<Vec<StreamingPlan>> {
        let mut plans = Vec::new();
        for stmt in statements {
            if stmt.kind == StatementKind::SourceDeclaration {
                let name = normalize(stmt.name.as_deref().unwrap_or_default());
                let schema = self.declared_schema(stmt)?;
                self.declared.insert(name, (schema, stmt));
                continue;
            }
            let plan = self.plan_query(stmt)?;
            if let Some(name) = &stmt.name {
                // downstream statements read plain columns: a window's
                // bounds are data there, not a window of their own
                self.outputs.insert(
                    normalize(name),
                    (stmt.index, without_window_roles(&plan.output_schema)),
                );
            }
            plans.push(plan);
        }
        Ok(plans)
    }

    fn declared_schema(&self, stmt: &ParsedStatement) -> Result<SchemaRef> {
        let catalog = StatementCatalog::new(&self.state);
        let planner = SqlToRel::new_with_options(&catalog, parser_options());
        let schema = planner
            .build_schema(stmt.columns.clone())
            .map_err(|e| df_error(e, stmt.location))?;
        Ok(Arc::new(schema))
    }

    fn plan_query(&self, stmt: &ParsedStatement) -> Result<StreamingPlan> {
        let mut query = stmt.query.clone().expect("query statements carry a query");
        let relations = referenced_relations(&query);
        let mut scope: Vec<String> = relations.iter().map(|(n, _)| n.clone()).collect();
        if let Some(sink) = &stmt.name {
            scope.push(normalize(sink));
        }
        scope.push(DEAD_LETTER.to_string());
        scope.push(crate::error_policy::ERROR.to_string());

        let mut sources = Vec::new();
        for (name, location) in &relations {
            sources.push(self.resolve_source(stmt, name, *location, &scope)?);
        }
        let versioned = join_time::apply(&mut query, &stmt.join_times, &sources)?;
        let mut system: Vec<String> = sources
            .iter()
            .flat_map(|b| b.schema.fields().iter().map(|f| f.name().clone()))
            .filter(|n| {
                system_columns::is_system_column(n)
                    || n.starts_with(crate::derived_tables::GROUP_KEY_PREFIX)
            })
            .collect();
        system.sort();
        system.dedup();
        system_columns::exclude_from_wildcards(&mut query, &system);
        header_function::rewrite_header_calls(&mut query);
        standard_functions::rewrite_standard_calls(&mut query);
        let uses_event_time = mentions_identifier(&query, EVENT_TIME);
        let plan_with = |query: Box<Query>, windowed: bool| -> Result<LogicalPlan> {
            let mut catalog = StatementCatalog::new(&self.state);
            for binding in &sources {
                let mut schema = if windowed && binding.name == sources[0].name {
                    with_window_columns(&binding.schema, stmt.window_from_table_function)
                } else {
                    binding.schema.clone()
                };
                if uses_event_time {
                    schema = with_event_time_column(&schema);
                }
                let schema = with_epoch_units(&schema, &binding.event_time, &binding.time_formats);
                catalog.add_table(&binding.name, schema);
            }
            let planner = SqlToRel::new_with_options(&catalog, parser_options());
            let logical = planner
                .sql_statement_to_plan(SqlStatement::Query(query))
                .map_err(|e| df_error(e, stmt.location))?;
            if let Some((message, hint)) = crate::type_checks::check_plan(&logical) {
                return Err(SqlError::new(message, stmt.location).with_hint(hint));
            }
            self.state
                .optimize(&logical)
                .map_err(|e| df_error(e, stmt.location))
        };
        let optimized = match &stmt.window {
            None => plan_with(query.clone(), false)?,
            Some(window) => {
                if !self.aggregates_in(&query) {
                    return Err(SqlError::new("WINDOW needs an aggregation", window.location).with_hint(
                        "add GROUP BY and aggregate functions such as COUNT(*), or remove the WINDOW clause",
                    ));
                }
                let mut windowed = query.clone();
                group_by_window(&mut windowed, window)?;
                plan_with(windowed, true)?
            }
        };

        let emit = stmt.emit.unwrap_or(if stmt.window.is_some() {
            EmitMode::Final
        } else {
            EmitMode::Changes
        });
        let mut mapper = NodeMapper {
            sources: &sources,
            versioned: &versioned,
            window: stmt.window.clone(),
            emit,
            aggregates: 0,
            location: stmt.location,
        };
        let root = mapper.map(&optimized)?;
        let aggregates = mapper.aggregates;
        drop(mapper);

        let key = result_key(stmt, &root, &optimized)?;
        let name = stmt.job_name();
        // a job's name becomes its state directory and lock file
        crate::names::check_path_name("job", &name).map_err(|m| {
            SqlError::new(m, stmt.location)
                .with_hint("rename the statement or give it `-- @name: job_name` above it")
        })?;
        let sink_name = stmt.name.clone().unwrap_or_else(|| name.clone());
        let sink_properties = match &stmt.name {
            Some(n) => stmt.properties.scoped(n, &scope, false),
            None => BTreeMap::new(),
        };
        let sink_properties = self.overridden(&sink_name, sink_properties);
        let dead_letter = self.overridden(
            DEAD_LETTER,
            stmt.properties.scoped(DEAD_LETTER, &scope, false),
        );
        let error_policy = crate::error_policy::from_properties(
            &stmt
                .properties
                .scoped(crate::error_policy::ERROR, &scope, false),
            stmt.properties
                .location_of("error.policy")
                .unwrap_or(stmt.location),
        )?;
        let dead_letter = (!dead_letter.is_empty()).then(|| SinkBinding {
            name: DEAD_LETTER.to_string(),
            properties: dead_letter,
        });
        Ok(StreamingPlan {
            statement: stmt.index,
            name,
            kind: stmt.kind,
            output_schema: optimized.schema().inner().clone(),
            root,
            sources,
            sink: SinkBinding {
                name: sink_name,
                properties: sink_properties,
            },
            dead_letter,
            error_policy,
            location: stmt.location,
            key,
            annotations: stmt.annotations.clone(),
            emit: (aggregates > 0).then_some(emit),
            emit_defaulted: stmt.emit.is_none(),
            derived: stmt.derived.clone(),
        })
    }

    fn resolve_source(
        &self,
        stmt: &ParsedStatement,
        name: &str,
        location: Location,
        scope: &[String],
    ) -> Result<SourceBinding> {
        let own = self.overridden(name, stmt.properties.scoped(name, scope, true));
        let table_key: Vec<String> = match self.declared.get(name) {
            Some((schema, decl)) if decl.declares_table => decl
                .primary_key
                .iter()
                .filter_map(|(k, _)| {
                    schema
                        .fields()
                        .iter()
                        .find(|f| f.name().eq_ignore_ascii_case(k))
                        .map(|f| f.name().clone())
                })
                .collect(),
            _ => Vec::new(),
        };
        let (origin, mut properties, schema) = if let Some((schema, decl)) = self.declared.get(name)
        {
            let decl_scope = vec![name.to_string()];
            let mut properties = decl.properties.scoped(name, &decl_scope, true);
            properties.extend(own);
            if !properties.contains_key("type") {
                return Err(SqlError::new(format!("source '{name}' is declared without a connector"), decl.location)
                    .with_hint(format!("add WITH ('type' = 'file_source', 'path' = '...') to the declaration of {name}")));
            }
            // a declaration without columns leaves them to the connector
            let schema = (!schema.fields().is_empty()).then(|| schema.clone());
            (SourceOrigin::External, properties, schema)
        } else if let Some((index, schema)) = self.outputs.get(name) {
            (SourceOrigin::Statement(*index), own, Some(schema.clone()))
        } else if own.contains_key("type") {
            (SourceOrigin::External, own, None)
        } else {
            return Err(self.unknown_source(name, location));
        };

        // Event-time keys configure the engine, not the connector.
        let event_time = EventTime::from_properties(&properties).map_err(|e| {
            let at = stmt
                .properties
                .location_of(
                    EVENT_TIME_KEYS
                        .iter()
                        .find(|k| e.contains(*k))
                        .unwrap_or(&""),
                )
                .unwrap_or(location);
            SqlError::new(format!("source '{name}': {e}"), at)
        })?;
        let time_formats = TimeFormats::from_properties(
            &properties,
            event_time.field.as_deref().map(|f| (f, &event_time.format)),
        )
        .map_err(|e| SqlError::new(format!("source '{name}': {e}"), location))?;
        properties.retain(|k, _| !EVENT_TIME_KEYS.contains(&k.as_str()) && !TimeFormats::is_key(k));
        let traits = self.resolver.traits(name, &properties);
        let mut event_time = event_time;
        if event_time.field.is_none() {
            // records that carry their event time (generated ones)
            event_time.field = traits.event_time_field.clone();
        }

        let declared = schema.is_some();
        let schema = match schema {
            Some(schema) => schema,
            None => self.resolver.infer_schema(name, &properties).map_err(|e| {
                let settings = if traits.essential_settings.is_empty() {
                    format!("'{name}.type'")
                } else {
                    traits.essential_settings.clone()
                };
                SqlError::new(format!("cannot read source '{name}': {e}"), location)
                    .with_hint(format!("check the {settings} properties, or declare its columns with CREATE STREAM {name} (col TYPE, ...)"))
                    .transient_if(e.transient)
            })?,
        };
        let schema = system_columns::with_system_columns(&schema, &traits.system_columns);
        if let Some(field) = &event_time.field {
            if schema.field_with_name(field).is_err() {
                let columns: Vec<&str> =
                    schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(SqlError::new(
                    format!("event.time.field '{field}' is not a column of source '{name}'"),
                    location,
                )
                .with_hint(format!("the columns of {name} are: {}", columns.join(", "))));
            }
        }
        if let Some(column) = time_formats
            .columns
            .keys()
            .find(|c| schema.field_with_name(c).is_err())
        {
            let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(SqlError::new(
                format!("'time.format.{column}' names no column of source '{name}'"),
                location,
            )
            .with_hint(format!("the columns of {name} are: {}", columns.join(", "))));
        }
        Ok(SourceBinding {
            name: name.to_string(),
            origin,
            properties,
            schema,
            declared,
            event_time,
            time_formats,
            traits,
            table_key,
        })
    }

    /// True when the query groups or calls an aggregate function.
    fn aggregates_in(&self, query: &Query) -> bool {
        if let SetExpr::Select(select) = query.body.as_ref() {
            if matches!(&select.group_by, GroupByExpr::Expressions(e, _) if !e.is_empty())
                || select.distinct.is_some()
            {
                return true;
            }
        }
        let aggregates = self.state.aggregate_functions();
        visit_expressions(query, |e| match e {
            SqlExprNode::Function(f)
                if aggregates.contains_key(&f.name.to_string().to_lowercase()) =>
            {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        })
        .is_break()
    }

    fn unknown_source(&self, name: &str, location: Location) -> SqlError {
        let mut known: Vec<&String> = self.declared.keys().chain(self.outputs.keys()).collect();
        known.sort();
        let known = if known.is_empty() {
            String::new()
        } else {
            format!(
                " Known streams: {}.",
                known
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        SqlError::new(format!("unknown source '{name}'"), location).with_hint(format!(
            "configure it in WITH ('{name}.type' = 'file_source', '{name}.path' = '...', '{name}.format' = 'jsonl') or declare it with CREATE STREAM {name} (...) WITH (...).{known}"
        ))
    }
}

fn parser_options() -> ParserOptions {
    ParserOptions::new()
        .with_collect_spans(true)
        .with_parse_float_as_decimal(true)
        .with_map_string_types_to_utf8view(false)
}

/// Unquoted identifiers are case-insensitive (lower-cased), as DataFusion does.
fn normalize(name: &str) -> String {
    name.to_lowercase()
}

/// The key of a statement's results: its `PRIMARY KEY` columns (which
/// must be output columns), else the output columns that are GROUP BY keys.
fn result_key(
    stmt: &ParsedStatement,
    root: &StreamNode,
    plan: &LogicalPlan,
) -> Result<Vec<String>> {
    let output = plan.schema();
    if !stmt.primary_key.is_empty() {
        return stmt
            .primary_key
            .iter()
            .map(|(name, location)| {
                let name = normalize(name);
                match output
                    .fields()
                    .iter()
                    .find(|f| f.name().eq_ignore_ascii_case(&name))
                {
                    Some(f) => Ok(f.name().clone()),
                    None => Err(SqlError::new(
                        format!("PRIMARY KEY column '{name}' is not an output column"),
                        *location,
                    )),
                }
            })
            .collect();
    }
    let Some(group_exprs) = root.flow().iter().find_map(|n| match n {
        StreamNode::Aggregate { group_exprs, .. } => Some(group_exprs),
        _ => None,
    }) else {
        return Ok(Vec::new());
    };
    // the aggregate's output names of its group keys (window bounds aside)
    let group_names: Vec<String> = group_exprs
        .iter()
        .filter(|e| !matches!(e, Expr::Column(c) if c.name.starts_with('_')))
        .map(|e| e.schema_name().to_string())
        .collect();
    // an output column is a key when the final projection passes a group
    // key through, under its own name or an alias (`GROUP BY lower(s)`
    // with `SELECT lower(s) AS name`)
    let passed_through = |expr: &Expr| {
        let inner = match expr {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        matches!(inner, Expr::Column(_)) && group_names.contains(&inner.schema_name().to_string())
    };
    Ok(match plan {
        LogicalPlan::Projection(p) => p
            .expr
            .iter()
            .zip(output.fields())
            .filter(|(e, _)| passed_through(e))
            .map(|(_, f)| f.name().clone())
            .collect(),
        // no projection above the aggregate (SELECT DISTINCT): its group
        // columns are output under their own names
        _ => output
            .fields()
            .iter()
            .filter(|f| {
                group_exprs.iter().any(
                    |e| matches!(e, Expr::Column(c) if c.name == *f.name() && !c.name.starts_with('_')),
                ) || group_names.contains(f.name())
            })
            .map(|f| f.name().clone())
            .collect(),
    })
}

/// True when the query names the (unquoted, any case) identifier `name`.
fn mentions_identifier(query: &Query, name: &str) -> bool {
    visit_expressions(query, |e| match e {
        SqlExprNode::Identifier(i) if i.value.eq_ignore_ascii_case(name) => ControlFlow::Break(()),
        SqlExprNode::CompoundIdentifier(parts)
            if parts
                .last()
                .is_some_and(|i| i.value.eq_ignore_ascii_case(name)) =>
        {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}
