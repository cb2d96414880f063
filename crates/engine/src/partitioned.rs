//! A job whose state is divided like its input: one pipeline per
//! partition of state this process owns.
//!
//! When several processes share a statement's input (a repartitioned
//! read), each key's records all come through one partition, and the
//! consumer group moves partitions between processes as they come and go.
//! The state of a partition must move with it: so each owned partition
//! runs its own [`Pipeline`], created when the partition is assigned
//! (restored from the state its last owner kept, if any) and dropped
//! when it is revoked. A process never holds a group it does not own, so
//! it never answers with part of one.
//!
//! Each partition's pipeline keeps its own watermark over the streams
//! its records come in on, so its windows close the same on whichever
//! process runs it.

use std::collections::BTreeMap;

use datafusion::arrow::record_batch::RecordBatch;

use crate::checkpoint::state_columns;
use crate::error::{EngineError, Result};
use crate::operators::{Pipeline, StateSize};
use crate::state::{AssignedPartition, PartitionMoves, PartitionState, StatefulOperator};

/// Builds a new, empty pipeline of the statement.
pub type PipelineFactory = Box<dyn FnMut() -> Result<Pipeline> + Send>;

/// The pipelines of the partitions of state this process owns.
pub struct PartitionedPipeline {
    job: String,
    factory: PipelineFactory,
    operators: Vec<StatefulOperator>,
    /// `name: type` of each stateful operator's state columns, to check a
    /// restored partition's state fits (a changed query's does not).
    columns: BTreeMap<usize, Vec<String>>,
    blocker: Option<String>,
    partitions: BTreeMap<usize, Pipeline>,
}

impl PartitionedPipeline {
    pub fn new(job: &str, mut factory: PipelineFactory) -> Result<Self> {
        let mut template = factory()?;
        let blocker = template.checkpoint_blocker();
        let mut operators = Vec::new();
        let mut columns = BTreeMap::new();
        for (index, op) in template.operators_mut().iter_mut().enumerate() {
            let name = op.name();
            if let Some(state) = op.state() {
                operators.push(StatefulOperator { index, name });
                columns.insert(index, state_columns(&state.snapshot()?));
            }
        }
        Ok(Self {
            job: job.to_string(),
            factory,
            operators,
            columns,
            blocker,
            partitions: BTreeMap::new(),
        })
    }

    /// The stateful operators every partition's pipeline has.
    pub fn operators(&self) -> &[StatefulOperator] {
        &self.operators
    }

    pub fn process(
        &mut self,
        partition: Option<usize>,
        batch: RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let partition = partition.ok_or_else(|| {
            EngineError::State(format!(
                "job {}: the source returned a batch without its partition of state",
                self.job
            ))
        })?;
        let pipeline = self.partitions.get_mut(&partition).ok_or_else(|| {
            EngineError::State(format!(
                "job {}: the source returned a batch of partition {partition}, which this process does not own",
                self.job
            ))
        })?;
        pipeline.process(batch, out)
    }

    /// Drops the revoked partitions' pipelines (their state is the next
    /// owner's now) and starts the assigned ones from the state given.
    pub fn apply(&mut self, moves: PartitionMoves) -> Result<()> {
        for partition in moves.revoked {
            self.partitions.remove(&partition);
        }
        for assigned in moves.assigned {
            let partition = assigned.partition;
            let pipeline = self.start(assigned)?;
            self.partitions.insert(partition, pipeline);
        }
        Ok(())
    }

    fn start(&mut self, assigned: AssignedPartition) -> Result<Pipeline> {
        let mut pipeline = (self.factory)()?;
        pipeline.declare_source_partitions(&assigned.streams);
        let Some(state) = assigned.state else {
            return Ok(pipeline);
        };
        let mut snapshots: BTreeMap<usize, _> = state.operators.into_iter().collect();
        for op in &self.operators {
            let snapshot = snapshots.remove(&op.index).ok_or_else(|| {
                EngineError::State(format!(
                    "job {}: the kept state of partition {} has nothing for operator #{} {}",
                    self.job, assigned.partition, op.index, op.name
                ))
            })?;
            if Some(&state_columns(&snapshot)) != self.columns.get(&op.index) {
                return Err(EngineError::State(format!(
                    "job {}: the kept state of partition {} for operator #{} {} has columns ({}) where the query now has ({}): the query changed since it was kept; delete the application's changelog topics (or change its group id) to start over",
                    self.job,
                    assigned.partition,
                    op.index,
                    op.name,
                    state_columns(&snapshot).join(", "),
                    self.columns.get(&op.index).cloned().unwrap_or_default().join(", ")
                )));
            }
            let target = pipeline.operators_mut()[op.index]
                .state()
                .ok_or_else(|| EngineError::State("a stateful operator lost its state".into()))?;
            target.restore(snapshot)?;
        }
        Ok(pipeline)
    }

    /// Every owned partition's state, for a checkpoint.
    pub fn capture(&mut self) -> Result<Vec<PartitionState>> {
        let mut out = Vec::with_capacity(self.partitions.len());
        for (&partition, pipeline) in &mut self.partitions {
            let mut operators = Vec::new();
            for (index, op) in pipeline.operators_mut().iter_mut().enumerate() {
                if let Some(state) = op.state() {
                    operators.push((index, state.snapshot()?));
                }
            }
            out.push(PartitionState {
                partition,
                operators,
            });
        }
        Ok(out)
    }

    /// The input ended: every owned partition emits what it holds.
    pub fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        for pipeline in self.partitions.values_mut() {
            pipeline.finish(out)?;
        }
        Ok(())
    }

    pub fn idle(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        for pipeline in self.partitions.values_mut() {
            pipeline.idle(out)?;
        }
        Ok(())
    }

    pub fn state_size(&self) -> StateSize {
        self.partitions.values().map(Pipeline::state_size).sum()
    }

    pub fn checkpoint_blocker(&self) -> Option<String> {
        self.blocker.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::Operator;
    use crate::state::{Checkpointable, OperatorSnapshot};
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// Sums its input's only column; emits the sum at the end.
    #[derive(Default)]
    struct Sum(i64);

    impl Operator for Sum {
        fn name(&self) -> &'static str {
            "sum"
        }
        fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
            let values = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            self.0 += values.iter().flatten().sum::<i64>();
            Ok(())
        }
        fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
            out.push(one(self.0));
            Ok(())
        }
        fn state(&mut self) -> Option<&mut dyn Checkpointable> {
            Some(self)
        }
    }

    impl Checkpointable for Sum {
        fn snapshot(&mut self) -> Result<OperatorSnapshot> {
            let batch = one(self.0);
            Ok(OperatorSnapshot {
                schema: batch.schema(),
                batches: vec![batch],
            })
        }
        fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()> {
            let column = snapshot.batches[0].column(0).clone();
            self.0 = column
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0);
            Ok(())
        }
    }

    fn one(v: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v]))]).unwrap()
    }

    fn sums(out: &[RecordBatch]) -> Vec<i64> {
        out.iter()
            .map(|b| {
                let c = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                c.value(0)
            })
            .collect()
    }

    fn assigned(partition: usize, state: Option<PartitionState>) -> AssignedPartition {
        AssignedPartition {
            partition,
            streams: vec![partition],
            state,
        }
    }

    #[test]
    fn state_moves_with_its_partition() {
        let factory = || -> PipelineFactory {
            Box::new(|| Ok(Pipeline::new(vec![Box::new(Sum::default())])))
        };
        let mut first = PartitionedPipeline::new("j", factory()).unwrap();
        assert_eq!(
            first.operators(),
            &[StatefulOperator {
                index: 0,
                name: "sum"
            }]
        );
        first
            .apply(PartitionMoves {
                revoked: vec![],
                assigned: vec![assigned(0, None), assigned(1, None)],
            })
            .unwrap();
        let mut out = Vec::new();
        first.process(Some(0), one(5), &mut out).unwrap();
        first.process(Some(1), one(7), &mut out).unwrap();
        first.process(Some(1), one(1), &mut out).unwrap();
        // a batch of a partition not owned is an error, not a wrong answer
        assert!(first.process(Some(2), one(1), &mut out).is_err());
        let kept = first.capture().unwrap();
        assert_eq!(kept.len(), 2);

        // partition 1 moves to another process, which starts from its state
        first
            .apply(PartitionMoves {
                revoked: vec![1],
                assigned: vec![],
            })
            .unwrap();
        let mut second = PartitionedPipeline::new("j", factory()).unwrap();
        second
            .apply(PartitionMoves {
                revoked: vec![],
                assigned: vec![assigned(1, Some(kept[1].clone()))],
            })
            .unwrap();
        second.process(Some(1), one(2), &mut out).unwrap();

        first.finish(&mut out).unwrap();
        assert_eq!(
            sums(&out),
            vec![5],
            "the first process answers only for partition 0"
        );
        out.clear();
        second.finish(&mut out).unwrap();
        assert_eq!(sums(&out), vec![10], "7 + 1 kept, + 2 after the move");
    }
}
