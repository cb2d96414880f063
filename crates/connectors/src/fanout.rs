//! A sink that writes every batch to several sinks: a stream that has its
//! own destination and is also read by later statements.

use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::{Result, Sink};

pub struct FanoutSink {
    sinks: Vec<Box<dyn Sink>>,
}

impl FanoutSink {
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Self {
        Self { sinks }
    }
}

impl Sink for FanoutSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.write(batch))
    }

    fn flush(&mut self) -> Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.flush())
    }

    fn flushed(&mut self) -> Result<bool> {
        // every sink is asked, so each serves its acknowledgements
        let mut all = true;
        for sink in &mut self.sinks {
            all &= sink.flushed()?;
        }
        Ok(all)
    }

    fn close(&mut self) -> Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.close())
    }
}
