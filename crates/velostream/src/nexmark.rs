//! Nexmark: `velostream nexmark generate` writes the generator's three
//! streams as JSON Lines, and `velostream bench nexmark` runs the queries of
//! `benches/nexmark/` over N events from the in-process generator and from
//! those files, reporting events/s, events/s per core, batch latency and
//! peak memory as a Markdown table.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use velostream_connectors::nexmark::generator::{Generator, Kind};
use velostream_sql::PropertyOverrides;

use crate::app::{run_jobs, Application, RunOptions};
use crate::bench::{peak_rss_line, Clock, Measurement};
use crate::progress::human;

/// The streams of the generator.
pub const STREAMS: [(&str, Kind); 3] = [
    ("person", Kind::Person),
    ("auction", Kind::Auction),
    ("bid", Kind::Bid),
];

/// Writes `events` events as `person.jsonl`, `auction.jsonl` and `bid.jsonl` in `dir`.
pub fn generate(dir: &Path, events: u64, seed: u64, rate: u64) -> std::io::Result<[u64; 3]> {
    std::fs::create_dir_all(dir)?;
    let g = Generator { seed, rate };
    let open = |name: &str| -> std::io::Result<BufWriter<std::fs::File>> {
        Ok(BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(dir.join(format!("{name}.jsonl")))?,
        ))
    };
    let (mut people, mut auctions, mut bids) = (open("person")?, open("auction")?, open("bid")?);
    let mut counts = [0u64; 3];
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default()
    };
    for n in 0..events {
        match Kind::of(n) {
            Kind::Person => {
                let p = g.person(n);
                counts[0] += 1;
                writeln!(
                    people,
                    r#"{{"id":{},"name":"{}","emailaddress":"{}","creditcard":"{}","city":"{}","state":"{}","datetime":"{}","extra":""}}"#,
                    p.id,
                    p.name,
                    p.email_address,
                    p.credit_card,
                    p.city,
                    p.state,
                    time(p.date_time)
                )?;
            }
            Kind::Auction => {
                let a = g.auction(n);
                counts[1] += 1;
                writeln!(
                    auctions,
                    r#"{{"id":{},"itemname":"{}","description":"{}","initialbid":{},"reserve":{},"datetime":"{}","expires":"{}","seller":{},"category":{},"extra":""}}"#,
                    a.id,
                    a.item_name,
                    a.description,
                    a.initial_bid,
                    a.reserve,
                    time(a.date_time),
                    time(a.expires),
                    a.seller,
                    a.category
                )?;
            }
            Kind::Bid => {
                let b = g.bid(n);
                counts[2] += 1;
                writeln!(
                    bids,
                    r#"{{"auction":{},"bidder":{},"price":{},"channel":"{}","url":"{}","datetime":"{}","extra":""}}"#,
                    b.auction,
                    b.bidder,
                    b.price,
                    b.channel,
                    b.url,
                    time(b.date_time)
                )?;
            }
        }
    }
    for w in [&mut people, &mut auctions, &mut bids] {
        w.flush()?;
    }
    Ok(counts)
}

/// What `bench nexmark` runs.
pub struct NexmarkBench {
    pub queries_dir: PathBuf,
    pub queries: Vec<String>,
    pub events: u64,
    pub batch_size: usize,
    /// Also run over JSON Lines files of the same events.
    pub files: bool,
}

/// Runs every query over the generator (and the files) and returns the report.
pub fn bench(b: NexmarkBench) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut sources: Vec<(&str, Option<PathBuf>)> = vec![("generator", None)];
    if b.files {
        eprintln!("writing {} events as JSON Lines ...", b.events);
        generate(dir.path(), b.events, 0, 10_000).map_err(|e| e.to_string())?;
        sources.push(("JSON files", Some(dir.path().to_path_buf())));
    }
    let mut rows = Vec::new();
    for query in &b.queries {
        let path = b.queries_dir.join(format!("{query}.sql"));
        let sql = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for (label, files) in &sources {
            let m = run(
                query,
                &sql,
                &b.queries_dir,
                b.events,
                files.as_deref(),
                b.batch_size,
            )?;
            eprintln!(
                "  {query} ({label}): {} events/s, {} per core",
                human(m.rate()),
                human(m.rate_per_core())
            );
            rows.push((query.clone(), *label, m));
        }
    }
    let mut report = format!(
        "Nexmark, {} events (person : auction : bid = 1 : 3 : 46), batch size {}, one thread per statement\n\n\
         | query | input | events/s (wall) | events/s per core (CPU time) | batch latency p50 | p99 |\n|---|---|---|---|---|---|\n",
        b.events, b.batch_size
    );
    for (query, input, m) in &rows {
        report.push_str(&format!(
            "| {query} | {input} | {} | {} | {:.2} ms | {:.2} ms |\n",
            human(m.rate()),
            human(m.rate_per_core()),
            m.p50_us as f64 / 1000.0,
            m.p99_us as f64 / 1000.0
        ));
    }
    report.push_str(&peak_rss_line());
    Ok(report)
}

/// One run of `sql` over `events` events; results go to a null sink.
/// Relative paths in the query (q13's side table) resolve against `dir`.
fn run(
    query: &str,
    sql: &str,
    dir: &Path,
    events: u64,
    files: Option<&Path>,
    batch_size: usize,
) -> Result<Measurement, String> {
    let mut overrides = PropertyOverrides::new();
    let props = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    for (name, _) in STREAMS {
        let source = match files {
            None => props(&[("type", "nexmark".into()), ("events", events.to_string())]),
            Some(dir) => props(&[
                ("type", "file_source".into()),
                (
                    "path",
                    dir.join(format!("{name}.jsonl")).display().to_string(),
                ),
                ("format", "jsonl".into()),
            ]),
        };
        overrides.insert(name.to_string(), source);
    }
    overrides.insert(query.to_string(), props(&[("type", "null".into())]));
    let options = RunOptions {
        batch_size,
        overrides,
        ..RunOptions::default()
    };
    let app = Application::from_text(&format!("{query}.sql"), sql, dir, &options)
        .map_err(|e| e.to_string())?;
    let jobs = app.build_jobs().map_err(|e| e.to_string())?;
    let last = jobs
        .last()
        .map(|j| j.metrics())
        .ok_or("the query has no statement")?;
    let clock = Clock::start();
    run_jobs(jobs).map_err(|e| e.to_string())?;
    let (seconds, cpu_seconds) = clock.stop();
    Ok(Measurement {
        label: "",
        records: events,
        seconds,
        cpu_seconds,
        p50_us: last.latency_quantile(0.5).unwrap_or(0),
        p99_us: last.latency_quantile(0.99).unwrap_or(0),
        checkpoint_ms: Vec::new(),
    })
}
