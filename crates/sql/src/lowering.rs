//! Lowering: maps an optimized DataFusion logical plan onto the chain of
//! streaming operators ([`StreamNode`]s) — where a projection, a filter, an
//! aggregate with its window and emit mode, a stream–table join or a row
//! function becomes a streaming step, and where unsupported shapes are
//! rejected with a message that says so.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Join, JoinType, LogicalPlan, Operator};

use crate::error::{Location, Result, SqlError};
use crate::event_time::WatermarkStrategy;
use crate::interval_join;
use crate::join_time::VersionedTable;
use crate::plan::columns::window_role;
use crate::plan::{SourceBinding, StreamNode};
use crate::window_clause::{EmitMode, WindowSpec};
use crate::windowing::window_assign;
use crate::within_marker;

/// Walks an optimized DataFusion plan and builds the operator chain.
pub(crate) struct NodeMapper<'s> {
    pub sources: &'s [SourceBinding],
    /// Tables joined `FOR SYSTEM_TIME AS OF`.
    pub versioned: &'s [VersionedTable],
    pub window: Option<WindowSpec>,
    pub emit: EmitMode,
    pub aggregates: usize,
    pub location: Location,
}

impl NodeMapper<'_> {
    pub fn map(&mut self, plan: &LogicalPlan) -> Result<StreamNode> {
        Ok(match plan {
            LogicalPlan::Projection(p) => StreamNode::Project {
                input: Box::new(self.map(&p.input)?),
                exprs: p.expr.clone(),
                input_schema: p.input.schema().clone(),
                schema: p.schema.clone(),
            },
            LogicalPlan::Filter(f) => StreamNode::Filter {
                input: Box::new(self.map(&f.input)?),
                predicate: f.predicate.clone(),
                input_schema: f.input.schema().clone(),
            },
            LogicalPlan::Aggregate(a) => {
                if a.group_expr
                    .iter()
                    .any(|e| matches!(e, Expr::GroupingSet(_)))
                {
                    return Err(self.unsupported(
                        "GROUPING SETS, ROLLUP and CUBE are not supported in streaming queries",
                    ));
                }
                let input = self.map(&a.input)?;
                if input
                    .flow()
                    .iter()
                    .any(|n| matches!(n, StreamNode::Aggregate { .. }))
                {
                    return Err(self.unsupported("aggregating the result of another aggregation is not yet supported")
                        .with_hint("write the inner aggregation as its own CREATE STREAM statement and aggregate that stream"));
                }
                self.aggregates += 1;
                StreamNode::Aggregate {
                    input: Box::new(input),
                    group_exprs: a.group_expr.clone(),
                    aggr_exprs: a.aggr_expr.clone(),
                    input_schema: a.input.schema().clone(),
                    schema: a.schema.clone(),
                    emit: self.emit,
                    window: self.window.clone(),
                }
            }
            LogicalPlan::TableScan(t) => {
                // Sources accept no filter pushdown (see catalog), so the
                // scan only selects columns.
                let source = t.table_name.table().to_string();
                let schema = t.projected_schema.inner().clone();
                let mut node = match (&self.window, self.sources.iter().find(|b| b.name == source))
                {
                    (window, Some(binding))
                        if window.is_some()
                            || schema.fields().iter().any(|f| window_role(f).is_some()) =>
                    {
                        window_assign(binding, schema, window.as_ref())?
                    }
                    _ => StreamNode::Scan { source, schema },
                };
                if let Some(fetch) = t.fetch {
                    node = StreamNode::Limit {
                        input: Box::new(node),
                        skip: 0,
                        fetch: Some(fetch),
                    };
                }
                node
            }
            LogicalPlan::SubqueryAlias(s) => self.map(&s.input)?,
            LogicalPlan::Limit(l) => {
                let skip = match l.get_skip_type() {
                    Ok(SkipType::Literal(s)) => s,
                    _ => return Err(self.unsupported("OFFSET must be a constant")),
                };
                let fetch = match l.get_fetch_type() {
                    Ok(FetchType::Literal(f)) => f,
                    _ => return Err(self.unsupported("LIMIT must be a constant")),
                };
                StreamNode::Limit {
                    input: Box::new(self.map(&l.input)?),
                    skip,
                    fetch,
                }
            }
            LogicalPlan::Sort(s) => StreamNode::Sort {
                input: Box::new(self.map(&s.input)?),
                exprs: s.expr.clone(),
                input_schema: s.input.schema().clone(),
                fetch: s.fetch,
            },
            LogicalPlan::Join(j) => {
                let (keep_unmatched, keep_other_unmatched) = match j.join_type {
                    JoinType::Inner => (false, false),
                    JoinType::Left => (true, false),
                    JoinType::Right => (false, true),
                    JoinType::Full => (true, true),
                    other => {
                        return Err(
                            self.unsupported(&format!("{other} joins are not yet supported"))
                        )
                    }
                };
                if let Some((bounds, filter)) = j.filter.as_ref().and_then(|f| {
                    let (left, right) = (j.left.schema(), j.right.schema());
                    within_marker::bounds(f, left, right)
                        .or_else(|| interval_join::extract(f, left, right))
                }) {
                    let window = self.window.take();
                    let other = self.map(&j.right);
                    self.window = window;
                    let other = other?;
                    let input = self.map(&j.left)?;
                    let lag = |node: &StreamNode| {
                        node.flow()
                            .first()
                            .and_then(|n| match n {
                                StreamNode::Scan { source, .. } => {
                                    self.sources.iter().find(|b| &b.name == source)
                                }
                                _ => None,
                            })
                            .map(|b| match b.event_time.watermark {
                                WatermarkStrategy::BoundedOutOfOrderness(d) => d.as_millis() as i64,
                                WatermarkStrategy::Ascending => 0,
                            })
                            .unwrap_or(0)
                    };
                    return Ok(StreamNode::IntervalJoin {
                        input_lag_ms: lag(&input),
                        other_lag_ms: lag(&other),
                        input: Box::new(input),
                        other: Box::new(other),
                        on: j.on.clone(),
                        bounds: Box::new(bounds),
                        filter,
                        keep_unmatched,
                        keep_other_unmatched,
                        input_schema: j.left.schema().clone(),
                        other_schema: j.right.schema().clone(),
                        schema: j.schema.clone(),
                    });
                }
                if keep_other_unmatched {
                    return Err(self.unsupported(&format!(
                        "{} joins with a table are not supported; the table side has no time to emit its unmatched rows at (INNER and LEFT are)",
                        j.join_type
                    )));
                }
                if j.on.is_empty() {
                    return Err(
                        self.unsupported("a join needs an equality condition (ON a.key = b.key)")
                    );
                }
                // The table side is read whole before the stream starts; it is never windowed.
                let window = self.window.take();
                let table = self.map(&j.right);
                self.window = window;
                let table = table?;
                if table.flow().iter().any(|n| {
                    !matches!(
                        n,
                        StreamNode::Scan { .. }
                            | StreamNode::Filter { .. }
                            | StreamNode::Project { .. }
                    )
                }) {
                    return Err(self.unsupported("the table side of a join must be a source read as a table (filters and projections allowed)"));
                }
                let (versioned, filter) = self.versioned_condition(j);
                StreamNode::LookupJoin {
                    input: Box::new(self.map(&j.left)?),
                    table: Box::new(table),
                    on: j.on.clone(),
                    filter,
                    versioned,
                    keep_unmatched,
                    input_schema: j.left.schema().clone(),
                    table_schema: j.right.schema().clone(),
                    schema: j.schema.clone(),
                }
            }
            LogicalPlan::Window(w) => StreamNode::RowWindow {
                input: {
                    self.check_frames(&w.window_expr)?;
                    Box::new(self.map(&w.input)?)
                },
                exprs: w.window_expr.clone(),
                input_schema: w.input.schema().clone(),
                schema: w.schema.clone(),
            },
            LogicalPlan::Union(_) => return Err(self.unsupported("UNION is not yet supported")),
            LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => {
                return Err(
                    self.unsupported("a streaming query needs a FROM clause naming a source")
                )
            }
            other => {
                return Err(self.unsupported(&format!(
                    "the plan node `{}` is not supported in a streaming query",
                    other.display()
                )))
            }
        })
    }

    /// For a table joined `FOR SYSTEM_TIME AS OF`: the (stream time, table
    /// time) pair of its `table_time <= stream_time` condition, and the rest
    /// of the join filter.
    fn versioned_condition(&self, j: &Join) -> (Option<(Expr, Expr)>, Option<Expr>) {
        let qualifier = j.right.schema().iter().next().and_then(|(q, _)| q.cloned());
        let Some(table) = self
            .versioned
            .iter()
            .find(|v| qualifier.as_ref().is_some_and(|q| q.table() == v.qualifier))
        else {
            return (None, j.filter.clone());
        };
        let mut times = None;
        let mut rest = Vec::new();
        for term in j.filter.iter().flat_map(split_conjunction) {
            match term {
                Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: Operator::LtEq,
                    right,
                }) if times.is_none()
                    && matches!(left.as_ref(), Expr::Column(c) if c.name == table.time_column
                        && c.relation.as_ref().is_some_and(|r| r.table() == table.qualifier)) =>
                {
                    times = Some((right.as_ref().clone(), left.as_ref().clone()))
                }
                other => rest.push(other.clone()),
            }
        }
        (times, conjunction(rest))
    }

    /// A frame `ROWS BETWEEN n PRECEDING` holds `n` rows per partition:
    /// more than [`MAX_FRAME_ROWS`] is refused here, with the statement's
    /// position, rather than when the operator is built.
    fn check_frames(&self, exprs: &[Expr]) -> Result<()> {
        use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
        for e in exprs {
            let Expr::WindowFunction(f) = e else { continue };
            let frame = &f.params.window_frame;
            if let (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) =
                (&frame.units, &frame.start_bound)
            {
                let too_many = match v {
                    v if v.is_null() => false,
                    ScalarValue::UInt64(Some(n)) => *n >= MAX_FRAME_ROWS,
                    other => other
                        .to_string()
                        .parse::<u128>()
                        .map_or(true, |n| n >= MAX_FRAME_ROWS as u128),
                };
                if too_many {
                    return Err(SqlError::new(
                        format!("ROWS BETWEEN {v} PRECEDING keeps that many rows per partition; at most {} are allowed", MAX_FRAME_ROWS - 1),
                        self.location,
                    )
                    .with_hint("write ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW for a running aggregate"));
                }
            }
        }
        Ok(())
    }

    fn unsupported(&self, message: &str) -> SqlError {
        SqlError::new(message, self.location)
    }
}

/// The most rows an aggregate frame (`ROWS BETWEEN n PRECEDING`) may hold per partition.
pub const MAX_FRAME_ROWS: u64 = 1_000_000;
