//! A file decoded on several threads hands on exactly what one thread
//! does: the same batches in the same order, the same malformed records
//! reported before the same batches, the same positions.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use velostream_engine::{JobMetrics, Source, SourceEvent};

use velostream_connectors::file::reader::LineSource;
use velostream_connectors::format::decode::BatchDecoder;
use velostream_connectors::RecordFormat;

/// Everything a file source hands on: batches, the malformed records
/// reported before each, and the position after each.
fn read_all(path: &std::path::Path, threads: usize, chunk: usize) -> Vec<String> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
    ]));
    let metrics = Arc::new(JobMetrics::default());
    metrics.dead_letters_enabled.store(true, Ordering::Relaxed);
    let decoder = BatchDecoder::new(RecordFormat::JsonLines, schema.clone(), schema, 4).unwrap();
    let mut source = LineSource::open_file(path, RecordFormat::JsonLines, decoder, metrics.clone())
        .unwrap()
        .with_max_record_bytes(60)
        .with_decode_threads(threads, chunk);
    let mut seen = Vec::new();
    loop {
        let event = source.poll_batch().unwrap();
        for letter in metrics.take_dead_letters() {
            seen.push(format!("rejected {} {}", letter.position, letter.reason));
        }
        match event {
            SourceEvent::Batch(batch) => {
                let ids = batch.column(0);
                seen.push(format!("batch {ids:?} then at {:?}", source.position()));
            }
            SourceEvent::End => return seen,
            _ => {}
        }
    }
}

#[test]
fn several_threads_hand_on_what_one_does_in_the_same_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    let mut text = String::new();
    for i in 0..500 {
        match i % 37 {
            5 => text.push_str("{\"id\": \"not a number\"}\n"),
            11 => text.push_str(&format!("{{\"name\": \"{}\"}}\n", "x".repeat(80))),
            17 => text.push('\n'),
            _ => text.push_str(&format!("{{\"id\": {i}, \"name\": \"n{i}\"}}\n")),
        }
    }
    std::fs::write(&path, &text).unwrap();
    let one = read_all(&path, 1, 50);
    assert!(one.iter().any(|l| l.starts_with("rejected")), "{one:?}");
    assert!(one.iter().filter(|l| l.starts_with("batch")).count() > 100);
    for (threads, chunk) in [(2, 50), (3, 50), (4, 7), (3, 1 << 20)] {
        let many = read_all(&path, threads, chunk);
        let same_chunks = read_all(&path, 1, chunk);
        assert_eq!(many, same_chunks, "{threads} threads, {chunk}-byte chunks");
    }
}
