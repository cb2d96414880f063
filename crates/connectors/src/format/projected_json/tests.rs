//! The fast decoder against arrow-json: where it reads a batch, the batch
//! is the one arrow-json reads; where it declines, nothing is lost.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::*;

fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|(name, t)| Field::new(*name, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn trades() -> SchemaRef {
    schema(&[
        ("id", DataType::Int64),
        ("symbol", DataType::Utf8),
        ("price", DataType::Decimal128(12, 4)),
        ("qty", DataType::Int32),
        ("ratio", DataType::Float64),
        ("live", DataType::Boolean),
        ("venue", DataType::LargeUtf8),
    ])
}

/// arrow-json's reading of `text` (with `coerce_primitive`, as the source uses it).
fn arrow(schema: &SchemaRef, text: &str) -> Option<RecordBatch> {
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(100_000)
        .with_coerce_primitive(true)
        .build_decoder()
        .ok()?;
    decoder.decode(text.as_bytes()).ok()?;
    decoder.flush().ok()?
}

fn fast(schema: &SchemaRef, text: &str) -> Result<Option<RecordBatch>, Decline> {
    let mut decoder = ProjectedJson::new(schema).expect("supported types");
    let decoded = decoder.decode(text.as_bytes(), 100_000, usize::MAX)?;
    assert_eq!(decoded.consumed, text.len());
    Ok(decoded.batch)
}

/// Read by the fast decoder, and exactly as arrow-json reads it.
fn read_as_arrow_does(schema: &SchemaRef, text: &str) {
    let ours = fast(schema, text).unwrap_or_else(|_| panic!("declined: {text}"));
    assert_eq!(ours, arrow(schema, text), "{text}");
}

#[test]
fn used_fields_are_read_and_the_others_skipped() {
    read_as_arrow_does(
        &trades(),
        concat!(
            r#"{"id": 1, "symbol": "AAPL", "price": "187.2500", "qty": 10, "ratio": 0.5, "live": true, "venue": "XNAS"}"#,
            "\n",
            r#"{"extra": {"deep": [1, 2, {"x": "}]"}], "n": null}, "id": 2, "symbol": "MS\"FT", "price": 12.5, "tags": ["a", "b"]}"#,
            "\n\n  \n",
            r#"{"venue": "X\u00e9\n", "live": false, "qty": "7", "ratio": -1.5e-3, "id": 3, "symbol": null, "note": "skip \\ me"}"#,
            "\n",
            r#"  {}  "#,
            "\n",
            r#"{"id": 1e3, "qty": 2.9, "symbol": 42, "venue": true, "price": 3, "ratio": "2.5"}"#,
        ),
    );
}

#[test]
fn keys_in_another_order_are_found() {
    let text = [
        r#"{"id": 1, "symbol": "A", "qty": 1}"#,
        r#"{"qty": 2, "id": 2, "symbol": "B"}"#,
        r#"{"symbol": "C", "other": 0, "qty": 3, "id": 3}"#,
        r#"{"id": 4}"#,
    ]
    .join("\n");
    read_as_arrow_does(&trades(), &text);
    // keys longer than a compared word, a key that is a prefix of another
    let long = schema(&[
        ("a_rather_long_field_name", DataType::Int64),
        ("a_rather_long_field_name_2", DataType::Int64),
        ("a", DataType::Int64),
    ]);
    let text = [
        r#"{"a_rather_long_field_name":1,"a_rather_long_field_name_2":2,"a":3}"#,
        r#"{"a_rather_long_field_name_2":4,"a_rather_long_field_name":5,"ab":6}"#,
        r#"{"a_rather_long_field_name":7,"a_rather_long_field_name_2":8,"a":9}"#,
        r#"{"a":10}"#,
    ]
    .join("\n");
    read_as_arrow_does(&long, &text);
}

#[test]
fn what_arrow_json_reads_differently_or_refuses_is_declined() {
    for text in [
        // arrow-json keeps the last of repeated keys
        r#"{"id": 1, "id": 2}"#,
        // arrow-json reads stray commas, and numbers that go on
        r#"{"id": 1,, "qty": 2}"#,
        r#"{"id": 01}"#,
        // several values on a line, a value that is not an object
        r#"{"id": 1} {"id": 2}"#,
        "[1, 2]",
        // values that are not of their column's type
        r#"{"id": "x"}"#,
        r#"{"live": "true"}"#,
        r#"{"symbol": {"a": 1}}"#,
        r#"{"price": "1.2.3"}"#,
        r#"{"price": 123456789012}"#,
        // an exponent arrow's decimal parser cannot hold
        r#"{"price": "1E-1000000000000000"}"#,
        // a record split over lines, an unterminated one
        "{\"id\": 1,\n\"qty\": 2}",
        r#"{"id": 1"#,
    ] {
        assert_eq!(fast(&trades(), text), Err(Decline), "{text}");
    }
}

#[test]
fn text_that_is_not_utf8_is_declined() {
    let mut decoder = ProjectedJson::new(&trades()).unwrap();
    let bytes = b"{\"symbol\": \"\xff\"}\n";
    assert!(decoder.decode(bytes, 10, usize::MAX).is_err());
}

#[test]
fn a_batch_stops_after_its_records_and_a_long_record_is_declined() {
    let text = "{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3}\n";
    let mut decoder = ProjectedJson::new(&trades()).unwrap();
    let first = decoder.decode(text.as_bytes(), 2, usize::MAX).unwrap();
    assert_eq!(first.consumed, 20);
    assert_eq!(first.batch.unwrap().num_rows(), 2);
    let rest = decoder
        .decode(&text.as_bytes()[20..], 2, usize::MAX)
        .unwrap();
    assert_eq!(rest.batch.unwrap().num_rows(), 1);
    assert!(decoder.decode(text.as_bytes(), 10, 5).is_err());
    // a declined batch leaves nothing behind
    let after = decoder.decode(b"{\"id\": 9}", 10, usize::MAX).unwrap();
    assert_eq!(after.batch.unwrap().num_rows(), 1);
}

#[test]
fn columns_of_other_types_are_left_to_arrow_json() {
    let nested = schema(&[(
        "tags",
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
    )]);
    assert!(ProjectedJson::new(&nested).is_none());
    let view = schema(&[("s", DataType::Utf8View)]);
    assert!(ProjectedJson::new(&view).is_none());
}

/// Records made of random pieces, some of them malformed: every batch the
/// fast decoder reads equals arrow-json's, and most batches are read.
#[test]
fn random_records_read_as_arrow_json_reads_them() {
    const VALUES: &[&str] = &[
        "1",
        "-7",
        "0",
        "12.50",
        "1e2",
        "-0.0",
        "3.4e-2",
        "99999999999",
        "\"12\"",
        "\"x\"",
        "\"a\\\"b\"",
        "\"\\u0041\"",
        "true",
        "false",
        "null",
        "[]",
        "[1,{\"a\":[]}]",
        "{}",
        "{\"k\": \"v\"}",
        "\"187.2500\"",
        "1.23456",
        "\"\"",
        "01",
        "1.",
        "tru",
    ];
    const KEYS: &[&str] = &[
        "id", "symbol", "price", "qty", "ratio", "live", "venue", "x", "y",
    ];
    let schema = trades();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let (mut read, mut batches) = (0, 0);
    for _ in 0..3000 {
        let members: Vec<String> = (0..next(5))
            .map(|_| {
                format!(
                    "\"{}\": {}",
                    KEYS[next(KEYS.len())],
                    VALUES[next(VALUES.len())]
                )
            })
            .collect();
        let line = format!("{{{}}}", members.join(", "));
        batches += 1;
        if let Ok(batch) = fast(&schema, &line) {
            read += 1;
            assert_eq!(batch, arrow(&schema, &line), "{line}");
        }
    }
    assert!(read * 4 > batches, "only {read} of {batches} read");
}
