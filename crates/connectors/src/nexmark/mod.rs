//! `nexmark`: the Nexmark benchmark's generator as a source. One source
//! reads one of the three streams — `person`, `auction` or `bid` (the
//! `kind` property, by default the source's name) — of one generated event
//! sequence: `events` events in all (unbounded without it), `rate` events
//! per second of event time (default 10,000), `seed` (default 0), generated
//! as fast as possible or, with `throttle`, in real time at `rate`. The
//! event time is the `datetime` column.

pub mod connector;
pub mod generator;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use velostream_engine::connector::Position;
use velostream_engine::{EngineError, Result, Source, SourceEvent};

use self::generator::{Generator, Kind};
use crate::error::{ConnectorError, ConnectorResult};
use crate::keys::Key;

/// The properties of a `nexmark` source.
pub const KEYS: &[Key] = &[
    Key::new("type", "the connector"),
    Key::new(
        "kind",
        "`person`, `auction` or `bid`; defaults to the source's name",
    ),
    Key::new(
        "events",
        "events in all (of every kind); unbounded without it",
    ),
    Key::with_default("rate", "10000", "events per second of event time"),
    Key::with_default(
        "seed",
        "0",
        "the generator's seed: the same seed gives the same events",
    ),
    Key::with_default(
        "throttle",
        "false",
        "`true` paces generation in real time at `rate`; otherwise as fast as possible",
    ),
];

/// A source's settings, from its properties.
#[derive(Debug, Clone, Copy)]
pub struct NexmarkConfig {
    pub kind: Kind,
    pub events: Option<u64>,
    pub generator: Generator,
    pub throttle: bool,
}

impl NexmarkConfig {
    pub fn from_properties(name: &str, props: &BTreeMap<String, String>) -> ConnectorResult<Self> {
        crate::keys::check_key_list(props, KEYS, "nexmark")?;
        let invalid = ConnectorError::InvalidValue;
        let kind = match props.get("kind").map(String::as_str).unwrap_or(name) {
            "person" | "persons" | "people" => Kind::Person,
            "auction" | "auctions" => Kind::Auction,
            "bid" | "bids" => Kind::Bid,
            other => {
                return Err(invalid(format!(
                    "nexmark 'kind' must be person, auction or bid (got '{other}'; it defaults to the source's name)"
                )))
            }
        };
        let number = |key: &str, default: Option<u64>| -> ConnectorResult<Option<u64>> {
            match props.get(key) {
                None => Ok(default),
                Some(v) => v.replace('_', "").parse::<u64>().map(Some).map_err(|_| {
                    invalid(format!("nexmark '{key}' must be a whole number, got '{v}'"))
                }),
            }
        };
        let rate = number("rate", Some(10_000))?.unwrap_or(10_000);
        if rate == 0 {
            return Err(invalid("nexmark 'rate' must be above 0".into()));
        }
        let throttle = match props.get("throttle").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(invalid(format!(
                    "nexmark 'throttle' must be true or false, got '{other}'"
                )))
            }
        };
        Ok(Self {
            kind,
            events: number("events", None)?,
            generator: Generator {
                seed: number("seed", Some(0))?.unwrap_or(0),
                rate,
            },
            throttle,
        })
    }
}

/// The columns of each stream (the reference schema, names in lower case).
pub fn schema(kind: Kind) -> SchemaRef {
    let int = |n: &str| Field::new(n, DataType::Int64, false);
    let text = |n: &str| Field::new(n, DataType::Utf8, false);
    let time = |n: &str| Field::new(n, DataType::Timestamp(TimeUnit::Millisecond, None), false);
    Arc::new(Schema::new(match kind {
        Kind::Person => vec![
            int("id"),
            text("name"),
            text("emailaddress"),
            text("creditcard"),
            text("city"),
            text("state"),
            time("datetime"),
            text("extra"),
        ],
        Kind::Auction => vec![
            int("id"),
            text("itemname"),
            text("description"),
            int("initialbid"),
            int("reserve"),
            time("datetime"),
            time("expires"),
            int("seller"),
            int("category"),
            text("extra"),
        ],
        Kind::Bid => vec![
            int("auction"),
            int("bidder"),
            int("price"),
            text("channel"),
            text("url"),
            time("datetime"),
            text("extra"),
        ],
    }))
}

/// Generates one stream's records in batches.
pub struct NexmarkSource {
    config: NexmarkConfig,
    /// The projected columns.
    schema: SchemaRef,
    /// Each projected column's position in the stream's full schema, found
    /// once so that records are filled without comparing names.
    slots: Vec<usize>,
    next_event: u64,
    /// The event the source started from (a restored checkpoint's).
    resumed_at: u64,
    batch_size: usize,
    started: Instant,
}

impl NexmarkSource {
    pub fn new(config: NexmarkConfig, schema: SchemaRef, batch_size: usize) -> Self {
        let full = self::schema(config.kind);
        let slots = schema
            .fields()
            .iter()
            .map(|f| full.index_of(f.name()).unwrap_or(usize::MAX))
            .collect();
        Self {
            config,
            schema,
            slots,
            next_event: 0,
            resumed_at: 0,
            batch_size,
            started: Instant::now(),
        }
    }

    /// The last event (exclusive) that may be generated now.
    fn limit(&self) -> u64 {
        let total = self.config.events.unwrap_or(u64::MAX);
        if !self.config.throttle {
            return total;
        }
        let due = self.resumed_at
            + (self.started.elapsed().as_secs_f64() * self.config.generator.rate as f64) as u64;
        due.min(total)
    }
}

/// Column builders for the projected columns of one kind.
enum Column {
    Int(Int64Builder),
    Text(StringBuilder),
    /// Milliseconds, cast to the declared timestamp type at the end.
    Time(TimestampMillisecondBuilder, DataType),
}

impl Column {
    fn of(field: &Field) -> Self {
        match field.data_type() {
            DataType::Int64 => Column::Int(Int64Builder::new()),
            DataType::Timestamp(..) => Column::Time(
                TimestampMillisecondBuilder::new(),
                field.data_type().clone(),
            ),
            _ => Column::Text(StringBuilder::new()),
        }
    }

    fn int(&mut self, v: i64) {
        match self {
            Column::Int(b) => b.append_value(v),
            Column::Time(b, _) => b.append_value(v),
            Column::Text(b) => b.append_value(v.to_string()),
        }
    }

    fn text(&mut self, v: &str) {
        if let Column::Text(b) = self {
            b.append_value(v)
        }
    }

    fn finish(self) -> Result<ArrayRef> {
        Ok(match self {
            Column::Int(mut b) => Arc::new(b.finish()),
            Column::Text(mut b) => Arc::new(b.finish()),
            Column::Time(mut b, t) => {
                datafusion::arrow::compute::cast(&(Arc::new(b.finish()) as ArrayRef), &t)?
            }
        })
    }
}

impl Source for NexmarkSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn poll_batch(&mut self) -> Result<SourceEvent> {
        let total = self.config.events.unwrap_or(u64::MAX);
        if self.next_event >= total {
            return Ok(SourceEvent::End);
        }
        let limit = self.limit();
        if self.next_event >= limit {
            std::thread::sleep(Duration::from_millis(5));
            return Ok(SourceEvent::Idle);
        }
        let slots = &self.slots;
        let mut columns: Vec<Column> = self.schema.fields().iter().map(|f| Column::of(f)).collect();
        let g = self.config.generator;
        let mut rows = 0;
        while rows < self.batch_size && self.next_event < limit {
            let n = self.next_event;
            self.next_event += 1;
            if Kind::of(n) != self.config.kind {
                continue;
            }
            rows += 1;
            match self.config.kind {
                Kind::Person => {
                    let p = g.person(n);
                    // slots follow `schema(Kind::Person)`
                    for (c, slot) in columns.iter_mut().zip(slots) {
                        match slot {
                            0 => c.int(p.id),
                            1 => c.text(&p.name),
                            2 => c.text(&p.email_address),
                            3 => c.text(&p.credit_card),
                            4 => c.text(p.city),
                            5 => c.text(p.state),
                            6 => c.int(p.date_time),
                            _ => c.text(""),
                        }
                    }
                }
                Kind::Auction => {
                    let a = g.auction(n);
                    // slots follow `schema(Kind::Auction)`
                    for (c, slot) in columns.iter_mut().zip(slots) {
                        match slot {
                            0 => c.int(a.id),
                            1 => c.text(&a.item_name),
                            2 => c.text(&a.description),
                            3 => c.int(a.initial_bid),
                            4 => c.int(a.reserve),
                            5 => c.int(a.date_time),
                            6 => c.int(a.expires),
                            7 => c.int(a.seller),
                            8 => c.int(a.category),
                            _ => c.text(""),
                        }
                    }
                }
                Kind::Bid => {
                    let b = g.bid(n);
                    // slots follow `schema(Kind::Bid)`
                    for (c, slot) in columns.iter_mut().zip(slots) {
                        match slot {
                            0 => c.int(b.auction),
                            1 => c.int(b.bidder),
                            2 => c.int(b.price),
                            3 => c.text(&b.channel),
                            4 => c.text(&b.url),
                            5 => c.int(b.date_time),
                            _ => c.text(""),
                        }
                    }
                }
            }
        }
        if rows == 0 {
            return Ok(SourceEvent::Idle);
        }
        let arrays = columns
            .into_iter()
            .map(Column::finish)
            .collect::<Result<Vec<ArrayRef>>>()?;
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(EngineError::from)?;
        Ok(SourceEvent::Batch(batch))
    }

    /// Events are a pure function of their number: the position is the
    /// next event's number.
    fn position(&self) -> Option<Position> {
        Some(serde_json::json!({ "next_event": self.next_event }))
    }

    fn seek(&mut self, position: &Position) -> Result<()> {
        let next = position
            .get("next_event")
            .and_then(|n| n.as_u64())
            .ok_or_else(|| EngineError::State(format!("unusable nexmark position {position}")))?;
        self.next_event = next;
        self.resumed_at = next;
        self.started = Instant::now();
        Ok(())
    }

    fn is_bounded(&self) -> bool {
        self.config.events.is_some()
    }
}
