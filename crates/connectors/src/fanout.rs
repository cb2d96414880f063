//! A sink that writes every batch to several sinks: a stream that has its
//! own destination and is also read by later statements.

use std::collections::VecDeque;

use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::connector::DeliveryMark;
use velostream_engine::{Result, Sink};

pub struct FanoutSink {
    sinks: Vec<Box<dyn Sink>>,
    /// The marks of each sink behind each of this sink's marks, oldest first.
    marks: VecDeque<(u64, Vec<DeliveryMark>)>,
    next_mark: u64,
}

impl FanoutSink {
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Self {
        Self {
            sinks,
            marks: VecDeque::new(),
            next_mark: 0,
        }
    }
}

impl Sink for FanoutSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.write(batch))
    }

    fn flush(&mut self) -> Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.flush())
    }

    fn mark(&mut self) -> Result<DeliveryMark> {
        let marks = self
            .sinks
            .iter_mut()
            .map(|s| s.mark())
            .collect::<Result<Vec<_>>>()?;
        let id = self.next_mark;
        self.next_mark += 1;
        self.marks.push_back((id, marks));
        Ok(DeliveryMark(id))
    }

    fn delivered(&mut self, mark: DeliveryMark) -> Result<bool> {
        let Some((_, marks)) = self.marks.iter().find(|(id, _)| *id == mark.0) else {
            // older than every mark held: it was delivered and forgotten
            return Ok(mark.0 < self.next_mark);
        };
        // every sink is asked, so each serves its acknowledgements
        let mut all = true;
        for (sink, &m) in self.sinks.iter_mut().zip(marks) {
            all &= sink.delivered(m)?;
        }
        if all {
            // a mark delivered means every earlier one is too
            self.marks.retain(|(id, _)| *id > mark.0);
        }
        Ok(all)
    }

    fn close(&mut self) -> Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.close())
    }
}
