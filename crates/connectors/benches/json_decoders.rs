//! JSON decoders compared on the benchmark's trade records: arrow-json's
//! tape decoder (what the sources used before), simd-json, sonic-rs and
//! the projected decoder the sources use now. Each turns the same JSON
//! Lines into the same Arrow columns (the 6 of the 9 fields the stateless
//! benchmark's pipeline uses), one thread, batches of 1,000 records.
//!
//! ```sh
//! cargo bench -p velostream-connectors --bench json_decoders [-- RECORDS]
//! ```
//!
//! Prints records/s and MB/s of each (the median of five runs), and checks
//! that every decoder produced the same columns.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, Float64Builder, Int64Builder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use sonic_rs::JsonValueTrait;
use velostream_connectors::format::projected_json::ProjectedJson;
use velostream_connectors::trade_records::TradeRecords;

const BATCH: usize = 1000;

fn schema(price: DataType) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("symbol", DataType::Utf8, true),
        Field::new("side", DataType::Utf8, true),
        Field::new("price", price, true),
        Field::new("quantity", DataType::Int64, true),
        Field::new("exchange", DataType::Utf8, true),
    ]))
}

/// Trade records as the stateless benchmark writes them (~154 bytes, 9
/// fields, 1,000 symbols).
fn records(n: u64) -> Vec<u8> {
    let mut trades = TradeRecords::new(1000);
    let mut out = String::new();
    for _ in 0..n {
        trades.write_next(&mut out);
    }
    out.into_bytes()
}

/// The input cut into batches of whole lines.
fn batches(input: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for (n, end) in memchr::memchr_iter(b'\n', input).enumerate() {
        if (n + 1) % BATCH == 0 {
            out.push(&input[start..=end]);
            start = end + 1;
        }
    }
    if start < input.len() {
        out.push(&input[start..]);
    }
    out
}

/// The builders the hand-written candidates fill.
#[derive(Default)]
struct Columns {
    id: Int64Builder,
    symbol: StringBuilder,
    side: StringBuilder,
    price: Float64Builder,
    quantity: Int64Builder,
    exchange: StringBuilder,
}

impl Columns {
    fn finish(&mut self, schema: &SchemaRef) -> RecordBatch {
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.symbol.finish()),
            Arc::new(self.side.finish()),
            Arc::new(self.price.finish()),
            Arc::new(self.quantity.finish()),
            Arc::new(self.exchange.finish()),
        ];
        RecordBatch::try_new(schema.clone(), arrays).expect("columns")
    }
}

fn arrow_json(schema: &SchemaRef, batch: &[u8]) -> RecordBatch {
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(BATCH)
        .with_coerce_primitive(true)
        .build_decoder()
        .expect("decoder");
    decoder.decode(batch).expect("decode");
    decoder.flush().expect("flush").expect("rows")
}

fn simd_json(schema: &SchemaRef, batch: &[u8], scratch: &mut Vec<u8>) -> RecordBatch {
    use simd_json::prelude::*;
    let mut c = Columns::default();
    for line in batch.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        // simd-json parses in place: each record is copied first
        scratch.clear();
        scratch.extend_from_slice(line);
        let value = simd_json::to_borrowed_value(scratch).expect("json");
        let object = value.as_object().expect("object");
        c.id.append_option(object.get("id").and_then(|v| v.as_i64()));
        c.symbol
            .append_option(object.get("symbol").and_then(|v| v.as_str()));
        c.side
            .append_option(object.get("side").and_then(|v| v.as_str()));
        c.price
            .append_option(object.get("price").and_then(|v| v.cast_f64()));
        c.quantity
            .append_option(object.get("quantity").and_then(|v| v.as_i64()));
        c.exchange
            .append_option(object.get("exchange").and_then(|v| v.as_str()));
    }
    c.finish(schema)
}

fn sonic_rs(schema: &SchemaRef, batch: &[u8]) -> RecordBatch {
    let mut c = Columns::default();
    for line in batch.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let (mut id, mut symbol, mut side, mut price, mut quantity, mut exchange) =
            (None, None, None, None, None, None);
        for member in sonic_rs::to_object_iter(line) {
            let (key, value) = member.expect("json");
            match &*key {
                "id" => id = value.as_i64(),
                "symbol" => symbol = value.as_str().map(str::to_string),
                "side" => side = value.as_str().map(str::to_string),
                // the number's text, as an exact decimal parser would read it
                "price" => price = value.as_raw_str().parse::<f64>().ok(),
                "quantity" => quantity = value.as_i64(),
                "exchange" => exchange = value.as_str().map(str::to_string),
                _ => {}
            }
        }
        c.id.append_option(id);
        c.symbol.append_option(symbol);
        c.side.append_option(side);
        c.price.append_option(price);
        c.quantity.append_option(quantity);
        c.exchange.append_option(exchange);
    }
    c.finish(schema)
}

/// Median seconds of five runs of `decode` over every batch.
fn time(
    batches: &[&[u8]],
    mut decode: impl FnMut(&[u8]) -> RecordBatch,
) -> (f64, Vec<RecordBatch>) {
    let mut runs = Vec::new();
    let mut out = Vec::new();
    for _ in 0..5 {
        out.clear();
        let start = Instant::now();
        for batch in batches {
            out.push(decode(batch));
        }
        runs.push(start.elapsed().as_secs_f64());
    }
    runs.sort_by(f64::total_cmp);
    (runs[2], out)
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let input = records(n);
    let lines = batches(&input);
    if std::env::args().any(|a| a == "--projected-only") {
        // for a profiler: the projected decoder alone
        let mut projected =
            ProjectedJson::new(&schema(DataType::Decimal128(12, 2))).expect("supported");
        let (t, _) = time(&lines, |b| {
            projected
                .decode(b, BATCH, usize::MAX)
                .ok()
                .and_then(|d| d.batch)
                .expect("decoded")
        });
        println!("projected: {:.2} M records/s", n as f64 / t / 1e6);
        return;
    }
    let mb = input.len() as f64 / 1e6;
    println!(
        "{n} trade records, {mb:.1} MB, 6 of 9 fields decoded, batches of {BATCH}, one thread\n"
    );
    println!("| decoder | price as | records/s | MB/s | vs arrow-json |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, price: &str, seconds: f64, against: f64| {
        println!(
            "| {name} | {price} | {:.2} M | {:.0} | {:.2}× |",
            n as f64 / seconds / 1e6,
            mb / seconds,
            against / seconds
        )
    };
    let float = schema(DataType::Float64);
    let decimal = schema(DataType::Decimal128(12, 2));
    let (base, reference) = time(&lines, |b| arrow_json(&float, b));
    row("arrow-json (tape)", "DOUBLE", base, base);
    let (base_decimal, reference_decimal) = time(&lines, |b| arrow_json(&decimal, b));
    row(
        "arrow-json (tape)",
        "DECIMAL(12,2)",
        base_decimal,
        base_decimal,
    );

    let mut scratch = Vec::new();
    let (t, out) = time(&lines, |b| simd_json(&float, b, &mut scratch));
    assert_eq!(out, reference, "simd-json decoded other values");
    row("simd-json (borrowed value)", "DOUBLE", t, base);

    let (t, out) = time(&lines, |b| sonic_rs(&float, b));
    assert_eq!(out, reference, "sonic-rs decoded other values");
    row("sonic-rs (lazy object iterator)", "DOUBLE", t, base);

    for (price, schema, reference, against) in [
        ("DOUBLE", &float, &reference, base),
        ("DECIMAL(12,2)", &decimal, &reference_decimal, base_decimal),
    ] {
        let mut projected = ProjectedJson::new(schema).expect("supported");
        let (t, out) = time(&lines, |b| projected_batch(&mut projected, b));
        assert_eq!(
            &out, reference,
            "the projected decoder decoded other values"
        );
        row("projected", price, t, against);
    }
}

fn projected_batch(decoder: &mut ProjectedJson, batch: &[u8]) -> RecordBatch {
    decoder
        .decode(batch, BATCH, usize::MAX)
        .ok()
        .and_then(|d| d.batch)
        .expect("decoded")
}
