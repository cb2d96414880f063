//! Turns a [`StreamingPlan`]'s operator chain into executable operators:
//! logical expressions become DataFusion physical expressions evaluated on
//! each batch, aggregate calls become accumulators.

use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::ExprSchemable;
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::physical_expr::{create_physical_sort_exprs, LexOrdering, PhysicalExpr};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{
    col, Expr, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};
use velostream_sql::plan::columns::{window_role, WINDOW_END, WINDOW_START};
use velostream_sql::{
    streaming_session_state, LateDataStrategy, StreamNode, StreamingPlan, WindowKind,
};

use crate::connector::{TableData, TableLoader};
use crate::error::{EngineError, Result};
use crate::metrics::JobMetrics;
use crate::operators::aggregate::AggregateOperator;
use crate::operators::cached_lookup_join::{CachedLookupJoinOperator, LookupTable};
use crate::operators::filter::FilterOperator;
use crate::operators::grouped::AggregateCall;
use crate::operators::interval_join::{IntervalJoinOperator, IntervalJoinSpec};
use crate::operators::limit::LimitOperator;
use crate::operators::lookup_join::{JoinTable, LookupJoinOperator, VersionTimes};
use crate::operators::project::ProjectOperator;
use crate::operators::row_errors::RowErrors;
use crate::operators::row_window::{RowFunction, RowWindowExpr, RowWindowOperator};
use crate::operators::session_aggregate::SessionAggregateOperator;
use crate::operators::sort::SortOperator;
use crate::operators::window_aggregate::{
    GroupSlot, WindowAggregateOperator, WindowAggregateParts,
};
use crate::operators::window_assign::WindowAssignOperator;
use crate::operators::{Operator, Pipeline};
use velostream_sql::ErrorPolicy;

/// The most rows an aggregate frame may hold per partition (the front end
/// refuses larger frames with the statement's position; this guards plans
/// built otherwise).
const MAX_FRAME_ROWS: usize = velostream_sql::lowering::MAX_FRAME_ROWS as usize;

/// Builds pipelines; holds the DataFusion session used to create
/// physical expressions.
pub struct PipelineBuilder {
    state: SessionState,
    tables: Option<Arc<dyn TableLoader>>,
    /// `velostream.processing.error_policy`: for statements without `'error.policy'`.
    error_policy: Option<ErrorPolicy>,
}

impl Default for PipelineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PipelineBuilder {
    /// Physical expressions for `exprs`, evaluated against `schema`.
    fn physical_exprs(
        &self,
        exprs: &[Expr],
        schema: &DFSchema,
    ) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
        Ok(exprs
            .iter()
            .map(|e| self.state.create_physical_expr(e.clone(), schema))
            .collect::<datafusion::common::Result<Vec<_>>>()?)
    }

    /// One `f(...) OVER (...)` as a row function; `output` is its column type.
    fn row_window_expr(
        &self,
        expr: &Expr,
        input: &DFSchema,
        output: &DataType,
    ) -> Result<RowWindowExpr> {
        let unsupported = |what: &str| EngineError::NotSupported(format!("{what} in `{expr}`"));
        let Expr::WindowFunction(wf) = expr.clone().unalias() else {
            return Err(EngineError::Plan(format!(
                "expected a window function, got {expr}"
            )));
        };
        let params = &wf.params;
        let physical = |e: &Expr| self.state.create_physical_expr(e.clone(), input);
        let frame = &params.window_frame;
        let literal_usize = |e: Option<&Expr>, default: usize| -> Result<usize> {
            match e {
                None => Ok(default),
                Some(Expr::Literal(v, _)) => v
                    .clone()
                    .cast_to(&DataType::UInt64)
                    .ok()
                    .and_then(|v| {
                        if let ScalarValue::UInt64(Some(n)) = v {
                            Some(n as usize)
                        } else {
                            None
                        }
                    })
                    .ok_or_else(|| unsupported("a non-constant offset")),
                Some(_) => Err(unsupported("a non-constant offset")),
            }
        };
        let (function, args) = match &wf.fun {
            WindowFunctionDefinition::WindowUDF(udwf) => match udwf.name() {
                "row_number" => (RowFunction::RowNumber, vec![]),
                "rank" => (RowFunction::Rank { dense: false }, vec![]),
                "dense_rank" => (RowFunction::Rank { dense: true }, vec![]),
                name @ ("lag" | "lead") => {
                    let offset = literal_usize(params.args.get(1), 1)?;
                    let default = match params.args.get(2) {
                        Some(Expr::Literal(v, _)) => v.cast_to(output)?,
                        Some(_) => return Err(unsupported("a non-constant LAG/LEAD default")),
                        None => ScalarValue::try_from(output)?,
                    };
                    let function = if name == "lag" {
                        RowFunction::Lag { offset, default }
                    } else {
                        RowFunction::Lead { offset, default }
                    };
                    (function, vec![physical(&params.args[0])?])
                }
                other => return Err(unsupported(&format!("the window function {other}"))),
            },
            WindowFunctionDefinition::AggregateUDF(_) => {
                if !matches!(frame.end_bound, WindowFrameBound::CurrentRow) {
                    return Err(unsupported(
                        "an aggregate frame that does not end at the current row (it needs future rows); \
                         write OVER (PARTITION BY .. ORDER BY .. ROWS BETWEEN n PRECEDING AND CURRENT ROW)",
                    ));
                }
                let rows = match (&frame.units, &frame.start_bound) {
                    (_, WindowFrameBound::Preceding(v)) if v.is_null() => None,
                    (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) => {
                        let preceding = literal_usize(Some(&Expr::Literal(v.clone(), None)), 0)?;
                        // the frame's rows are held per partition
                        if preceding >= MAX_FRAME_ROWS {
                            return Err(EngineError::Plan(format!(
                                "ROWS BETWEEN {preceding} PRECEDING keeps that many rows per partition; at most {} are allowed (write UNBOUNDED PRECEDING for a running aggregate)",
                                MAX_FRAME_ROWS - 1
                            )));
                        }
                        Some(preceding + 1)
                    }
                    (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => Some(1),
                    _ => return Err(unsupported("a RANGE or GROUPS frame with an offset")),
                };
                let aggregate = Expr::AggregateFunction(
                    datafusion::logical_expr::expr::AggregateFunction::new_udf(
                        match &wf.fun {
                            WindowFunctionDefinition::AggregateUDF(f) => f.clone(),
                            _ => unreachable!(),
                        },
                        params.args.clone(),
                        params.distinct,
                        None,
                        vec![],
                        None,
                    ),
                );
                let context = PhysicalPlanningContext::default();
                let lowered = LoweredAggregateBuilder::new(
                    &aggregate,
                    input,
                    input.as_arrow(),
                    self.state.execution_props(),
                    &context,
                )
                .build()?;
                let args = lowered.aggregate.expressions();
                (
                    RowFunction::Aggregate {
                        function: lowered.aggregate,
                        rows,
                    },
                    args,
                )
            }
        };
        let partition_by = self.physical_exprs(&params.partition_by, input)?;
        let partition_fields = params
            .partition_by
            .iter()
            .map(|e| e.to_field(input).map(|(_, f)| f))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let order_exprs: Vec<Expr> = params.order_by.iter().map(|s| s.expr.clone()).collect();
        let order_by = self.physical_exprs(&order_exprs, input)?;
        Ok(RowWindowExpr {
            function,
            args,
            partition_by,
            partition_fields,
            order_by,
        })
    }

    pub fn new() -> Self {
        Self {
            state: streaming_session_state(),
            tables: None,
            error_policy: None,
        }
    }

    /// The error policy of statements that set none (the configuration's).
    pub fn with_error_policy(mut self, policy: Option<ErrorPolicy>) -> Self {
        self.error_policy = policy;
        self
    }

    /// Where the table sides of joins are loaded from.
    pub fn with_table_loader(mut self, tables: Arc<dyn TableLoader>) -> Self {
        self.tables = Some(tables);
        self
    }

    /// The source a join's second input reads, its decoded columns, and
    /// the loader that provides it.
    fn join_input<'n>(
        &self,
        side: &'n StreamNode,
    ) -> Result<(&'n str, &'n SchemaRef, &Arc<dyn TableLoader>)> {
        let Some(StreamNode::Scan { source, schema }) = side.flow().first().copied() else {
            return Err(EngineError::Plan(
                "the second input of a join must start with a source".into(),
            ));
        };
        let loader = self
            .tables
            .as_ref()
            .ok_or_else(|| EngineError::Plan("no loader for the second input of joins".into()))?;
        Ok((source, schema, loader))
    }

    /// The table side of a join: loaded rows run through the table's
    /// operators now, or a stream to read when the join first runs.
    fn join_table(
        &self,
        table: &StreamNode,
        schema: &DFSchema,
        dead_letter: bool,
        metrics: &Arc<JobMetrics>,
    ) -> Result<JoinTable> {
        let (source, decoded, loader) = self.join_input(table)?;
        let mut pipeline = self.build_nodes(table, dead_letter, true, metrics.clone())?;
        match loader.load(source, decoded.clone(), metrics.clone())? {
            TableData::Rows(batches) => {
                let mut rows = Vec::new();
                for batch in batches {
                    pipeline.process(batch, &mut rows)?;
                }
                pipeline.finish(&mut rows)?;
                Ok(JoinTable::Loaded(
                    datafusion::arrow::compute::concat_batches(schema.inner(), &rows)?,
                ))
            }
            TableData::Stream(source) => Ok(JoinTable::Feed {
                source,
                pipeline,
                schema: schema.inner().clone(),
            }),
            TableData::Lookup { lookup, cache } => Ok(JoinTable::Lookup(LookupTable {
                lookup,
                cache,
                pipeline,
                key_columns: Vec::new(),
                schema: schema.inner().clone(),
            })),
        }
    }

    /// The operators of `plan`, source side first. `bounded` says whether
    /// every source of the plan ends by itself.
    pub fn build(
        &self,
        plan: &StreamingPlan,
        bounded: bool,
        metrics: Arc<JobMetrics>,
    ) -> Result<Pipeline> {
        let policy = match (plan.error_policy, self.error_policy) {
            (Some(ErrorPolicy::DeadLetter), _) if plan.dead_letter.is_none() => {
                return Err(EngineError::Plan(
                    "'error.policy' = 'dead_letter' needs a dead-letter sink: add 'dead_letter.type' = 'file_sink' and 'dead_letter.path' = '...', or use 'skip'".into(),
                ))
            }
            (Some(p), _) => p,
            // the configuration's dead_letter applies where there is a dead-letter sink
            (None, Some(ErrorPolicy::DeadLetter)) | (None, None) if plan.dead_letter.is_some() => {
                ErrorPolicy::DeadLetter
            }
            (None, Some(ErrorPolicy::DeadLetter)) | (None, None) => ErrorPolicy::Skip,
            (None, Some(p)) => p,
        };
        let pipeline = self.build_nodes(
            &plan.root,
            plan.dead_letter.is_some(),
            bounded,
            metrics.clone(),
        )?;
        Ok(pipeline.with_row_errors(RowErrors {
            policy,
            metrics,
            location: plan.location,
        }))
    }

    /// The operators from `root`'s source up to `root`.
    fn build_nodes(
        &self,
        root: &StreamNode,
        dead_letter: bool,
        bounded: bool,
        metrics: Arc<JobMetrics>,
    ) -> Result<Pipeline> {
        let mut operators: Vec<Box<dyn Operator>> = Vec::new();
        for node in root.flow() {
            match node {
                StreamNode::Scan { .. } => {}
                StreamNode::WindowAssign {
                    input,
                    window,
                    time_column,
                    event_time,
                    schema,
                } => {
                    if event_time.late_data == LateDataStrategy::DeadLetter && !dead_letter {
                        return Err(EngineError::Plan(
                            "'late.data.strategy' = 'dead_letter' needs a dead-letter sink: add \
                             WITH ('dead_letter.type' = 'file_sink', 'dead_letter.path' = '...')"
                                .into(),
                        ));
                    }
                    let StreamNode::Scan {
                        schema: decoded, ..
                    } = input.as_ref()
                    else {
                        return Err(EngineError::Plan(
                            "window assignment must read a source".into(),
                        ));
                    };
                    operators.push(Box::new(WindowAssignOperator::new(
                        decoded.clone(),
                        time_column.as_deref(),
                        event_time,
                        window.as_ref().map(|w| w.kind.clone()),
                        schema.clone(),
                        metrics.clone(),
                    )?));
                }
                StreamNode::Filter {
                    predicate,
                    input_schema,
                    ..
                } => {
                    let predicate = self
                        .state
                        .create_physical_expr(predicate.clone(), input_schema)?;
                    operators.push(Box::new(FilterOperator::new(predicate)));
                }
                StreamNode::Project {
                    exprs,
                    input_schema,
                    schema,
                    ..
                } => {
                    let exprs = self.physical_exprs(exprs, input_schema)?;
                    operators.push(Box::new(ProjectOperator::new(
                        exprs,
                        schema.inner().clone(),
                    )));
                }
                StreamNode::Aggregate {
                    group_exprs,
                    aggr_exprs,
                    input_schema,
                    schema,
                    emit,
                    window,
                    ..
                } => {
                    let calls = aggr_exprs
                        .iter()
                        .map(|e| {
                            let context = PhysicalPlanningContext::default();
                            let lowered = LoweredAggregateBuilder::new(
                                e,
                                input_schema,
                                input_schema.as_arrow(),
                                self.state.execution_props(),
                                &context,
                            )
                            .build()?;
                            Ok(AggregateCall {
                                // ordered aggregates (FIRST_VALUE(x ORDER BY t)) take their
                                // ordering columns after the arguments
                                args: {
                                    let all = lowered.aggregate.all_expressions();
                                    all.args.into_iter().chain(all.order_by_exprs).collect()
                                },
                                function: lowered.aggregate,
                                filter: lowered.filter,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let physical =
                        |e: &Expr| self.state.create_physical_expr(e.clone(), input_schema);
                    if window.is_some() {
                        let mut parts = WindowAggregateParts {
                            key_exprs: Vec::new(),
                            start: physical(&col(WINDOW_START))?,
                            end: physical(&col(WINDOW_END))?,
                            layout: Vec::new(),
                            calls,
                        };
                        for e in group_exprs {
                            let role = match e {
                                Expr::Column(c) => input_schema
                                    .qualified_field_from_column(c)
                                    .ok()
                                    .and_then(|(_, f)| window_role(f).map(str::to_string)),
                                _ => None,
                            };
                            let slot = match role.as_deref() {
                                Some("start") => GroupSlot::WindowStart,
                                Some(_) => GroupSlot::WindowEnd,
                                None => {
                                    parts.key_exprs.push(physical(e)?);
                                    GroupSlot::Key(parts.key_exprs.len() - 1)
                                }
                            };
                            parts.layout.push(slot);
                        }
                        let is_session = matches!(
                            window.as_ref().map(|w| &w.kind),
                            Some(WindowKind::Session { .. })
                        );
                        if is_session {
                            operators.push(Box::new(SessionAggregateOperator::new(
                                parts,
                                *emit,
                                schema.inner().clone(),
                                metrics.clone(),
                            )?));
                        } else {
                            operators.push(Box::new(WindowAggregateOperator::new(
                                parts,
                                *emit,
                                schema.inner().clone(),
                            )));
                        }
                    } else {
                        let group_exprs = self.physical_exprs(group_exprs, input_schema)?;
                        operators.push(Box::new(AggregateOperator::new(
                            group_exprs,
                            calls,
                            *emit,
                            schema.inner().clone(),
                        )?));
                    }
                }
                StreamNode::RowWindow {
                    exprs,
                    input_schema,
                    schema,
                    ..
                } => {
                    let exprs = exprs
                        .iter()
                        .enumerate()
                        .map(|(i, e)| {
                            self.row_window_expr(
                                e,
                                input_schema,
                                schema.field(input_schema.fields().len() + i).data_type(),
                            )
                        })
                        .collect::<Result<Vec<_>>>()?;
                    operators.push(Box::new(RowWindowOperator::new(
                        exprs,
                        schema.inner().clone(),
                    )?));
                }
                StreamNode::LookupJoin {
                    table,
                    on,
                    filter,
                    versioned,
                    keep_unmatched,
                    input_schema,
                    table_schema,
                    schema,
                    ..
                } => {
                    let table = self.join_table(table, table_schema, dead_letter, &metrics)?;
                    let (stream_keys, table_keys): (Vec<Expr>, Vec<Expr>) =
                        on.iter().cloned().unzip();
                    let filter = match filter {
                        Some(f) => Some(self.state.create_physical_expr(f.clone(), schema)?),
                        None => None,
                    };
                    if let JoinTable::Lookup(mut lookup) = table {
                        if versioned.is_some() {
                            return Err(EngineError::Plan(
                                "a looked-up table (PostgreSQL) is met as it is now, so FOR SYSTEM_TIME AS OF an event time cannot pick its versions; read the table's changes from a Kafka topic or a file for a versioned join, or drop FOR SYSTEM_TIME AS OF".into(),
                            ));
                        }
                        lookup.key_columns = lookup_key_columns(&table_keys)?;
                        let key_types = table_keys
                            .iter()
                            .map(|k| Ok(k.get_type(table_schema)?))
                            .collect::<Result<Vec<_>>>()?;
                        operators.push(Box::new(CachedLookupJoinOperator::new(
                            self.physical_exprs(&stream_keys, input_schema)?,
                            lookup,
                            self.physical_exprs(&table_keys, table_schema)?,
                            key_types,
                            filter,
                            *keep_unmatched,
                            schema.inner().clone(),
                        )?));
                        continue;
                    }
                    let versions = match versioned {
                        Some((stream_time, table_time)) => Some(VersionTimes {
                            stream_time: self
                                .state
                                .create_physical_expr(stream_time.clone(), input_schema)?,
                            table_time: self
                                .state
                                .create_physical_expr(table_time.clone(), table_schema)?,
                        }),
                        None => None,
                    };
                    operators.push(Box::new(LookupJoinOperator::new(
                        self.physical_exprs(&stream_keys, input_schema)?,
                        table,
                        self.physical_exprs(&table_keys, table_schema)?,
                        filter,
                        versions,
                        *keep_unmatched,
                        schema.inner().clone(),
                    )?));
                }
                StreamNode::IntervalJoin {
                    other,
                    on,
                    bounds,
                    filter,
                    keep_unmatched,
                    keep_other_unmatched,
                    input_lag_ms,
                    other_lag_ms,
                    input_schema,
                    other_schema,
                    schema,
                    ..
                } => {
                    let (source, decoded, loader) = self.join_input(other)?;
                    let other_source = loader.open(source, decoded.clone(), metrics.clone())?;
                    let other_pipeline =
                        self.build_nodes(other, dead_letter, bounded, metrics.clone())?;
                    let (left_keys, right_keys): (Vec<Expr>, Vec<Expr>) =
                        on.iter().cloned().unzip();
                    let filter = match filter {
                        Some(f) => Some(self.state.create_physical_expr(f.clone(), schema)?),
                        None => None,
                    };
                    let spec = IntervalJoinSpec {
                        left_keys: self.physical_exprs(&left_keys, input_schema)?,
                        right_keys: self.physical_exprs(&right_keys, other_schema)?,
                        left_time: self
                            .state
                            .create_physical_expr(bounds.left_time.clone(), input_schema)?,
                        right_time: self
                            .state
                            .create_physical_expr(bounds.right_time.clone(), other_schema)?,
                        lower_ms: bounds.lower_ms,
                        upper_ms: bounds.upper_ms,
                        left_lag_ms: *input_lag_ms,
                        right_lag_ms: *other_lag_ms,
                        filter,
                        keep_unmatched: *keep_unmatched,
                        keep_other_unmatched: *keep_other_unmatched,
                        schema: schema.inner().clone(),
                    };
                    operators.push(Box::new(IntervalJoinOperator::new(
                        spec,
                        other_source,
                        other_pipeline,
                        other_schema.inner().clone(),
                        metrics.clone(),
                    )));
                }
                StreamNode::Limit { skip, fetch, .. } => {
                    operators.push(Box::new(LimitOperator::new(*skip, *fetch)))
                }
                StreamNode::Sort {
                    exprs,
                    input_schema,
                    fetch,
                    ..
                } => {
                    if !bounded {
                        return Err(EngineError::NotSupported(
                            "ORDER BY over an unbounded source (it would never emit); sort inside a window instead".into(),
                        ));
                    }
                    let sort = create_physical_sort_exprs(
                        exprs,
                        input_schema,
                        self.state.execution_props(),
                        &PhysicalPlanningContext::default(),
                    )?;
                    let ordering = LexOrdering::new(sort)
                        .ok_or_else(|| EngineError::Plan("empty ORDER BY".into()))?;
                    operators.push(Box::new(SortOperator::new(
                        ordering,
                        *fetch,
                        input_schema.inner().clone(),
                    )));
                }
            }
        }
        Ok(Pipeline::new(operators))
    }
}

/// The source column names of a looked-up table's join keys: the table is
/// asked by column, so each key must be one of its columns (a cast the
/// planner added to match the stream key's type is looked through).
fn lookup_key_columns(table_keys: &[Expr]) -> Result<Vec<String>> {
    table_keys.iter().map(lookup_key_column).collect()
}

fn lookup_key_column(key: &Expr) -> Result<String> {
    match key {
        Expr::Column(c) => Ok(c.name.clone()),
        Expr::Cast(c) => lookup_key_column(&c.expr),
        other => Err(EngineError::Plan(format!(
            "a looked-up table (PostgreSQL) is joined on its columns, not on the expression {other}; compute the key in the table's query or join on a column"
        ))),
    }
}
