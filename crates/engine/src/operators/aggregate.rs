//! Non-windowed `GROUP BY` aggregation: `EMIT CHANGES` emits the new row
//! of every group a batch touched; `EMIT FINAL` emits every group once, at
//! the end of bounded input.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;
use velostream_sql::EmitMode;

use super::grouped::{conform, AggregateCall, GroupedAggregates};
use super::{Operator, RowIsolation, StateSize};
use crate::error::{EngineError, Result};
use crate::state::{Checkpointable, OperatorSnapshot};

pub struct AggregateOperator {
    groups: GroupedAggregates,
    emit: EmitMode,
    schema: SchemaRef,
}

impl AggregateOperator {
    pub fn new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        calls: Vec<AggregateCall>,
        emit: EmitMode,
        schema: SchemaRef,
    ) -> Result<Self> {
        let key_fields: Vec<_> = schema
            .fields()
            .iter()
            .take(group_exprs.len())
            .cloned()
            .collect();
        Ok(Self {
            groups: GroupedAggregates::new(group_exprs.into(), calls.into(), &key_fields)?,
            emit,
            schema,
        })
    }

    /// Number of groups held.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }
}

impl Operator for AggregateOperator {
    fn name(&self) -> &'static str {
        "aggregate"
    }

    fn isolation(&self) -> RowIsolation {
        RowIsolation::Expressions(self.groups.input_expressions())
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let touched = self.groups.update(&batch)?;
        if self.emit == EmitMode::Changes && !touched.is_empty() {
            out.push(conform(&self.schema, self.groups.evaluate(&touched)?)?);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.emit != EmitMode::Final {
            return Ok(());
        }
        self.groups.ensure_global_group()?;
        let all: Vec<usize> = (0..self.groups.len()).collect();
        if !all.is_empty() {
            out.push(conform(&self.schema, self.groups.evaluate(&all)?)?);
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            rows: 0,
            windows: 0,
            keys: self.groups.len(),
        }
    }

    fn state(&mut self) -> Option<&mut dyn Checkpointable> {
        Some(self)
    }
}

impl Checkpointable for AggregateOperator {
    fn snapshot(&mut self) -> Result<OperatorSnapshot> {
        self.groups.snapshot()
    }

    fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()> {
        if !self.groups.is_empty() {
            return Err(EngineError::State(
                "restore into an aggregate that already holds groups".into(),
            ));
        }
        self.groups.restore(snapshot)
    }
}
