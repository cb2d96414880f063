//! The `velostream bench` subcommands: their flags, and the file-based
//! suites (stateless, window, join, interval) each one runs.

use std::path::PathBuf;

use clap::Subcommand;

use crate::bench;

/// Settings every benchmark takes.
#[derive(clap::Args)]
pub struct BenchRun {
    /// Records per batch
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Runs per query (the median is reported)
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Nexmark queries (benches/nexmark/*.sql) over the generator, JSON files and optionally Kafka
    Nexmark {
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Comma-separated query names
        #[arg(
            long,
            default_value = "q0,q1,q2,q3,q4,q5,q7,q8,q10,q11,q12,q13,q14,q15,q16,q17,q20,q21,q22"
        )]
        queries: String,
        #[arg(long, default_value = "benches/nexmark")]
        dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// Only the in-process generator (no JSON files)
        #[arg(long)]
        generator_only: bool,
        /// Also run over the events produced to Kafka topics on these
        /// brokers (`--kafka` alone: KAFKA_BROKERS, else localhost:9092)
        #[arg(long, value_name = "BROKERS", num_args = 0..=1, default_missing_value = "")]
        kafka: Option<String>,
        /// Also run each query over the generator with N pipelines per job
        #[arg(long, value_name = "N", default_value_t = 1)]
        parallelism: usize,
    },
    /// Checkpoint overhead on the windowed benchmark (memory and rocksdb),
    /// and recovery time of a job with many keys of state
    Checkpoint(crate::bench::checkpoint::CheckpointBench),
    /// One application on 1, 2, 3 … processes of one consumer group over
    /// the same topic: wall time and CPU per million records
    ScaleOut(crate::bench::scale_out::ScaleOutBench),
    /// Two processes of a repartitioned application, one killed: how long
    /// its partitions take to move and how fast their state is restored
    Takeover(crate::bench::takeover::TakeoverBench),
    /// Kafka -> filter + projection -> Kafka vs a plain librdkafka consume
    Kafka {
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Bootstrap servers (default: KAFKA_BROKERS, else localhost:9092)
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// Runs of each reader (the median by CPU time is reported)
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Latency of a Kafka → filter → Kafka job at fixed input rates, beside
    /// the broker's own produce-to-consume latency in the same run
    Latency {
        /// Input records per second, one run each (comma-separated)
        #[arg(long, default_value = "100,1000,10000", value_delimiter = ',')]
        rates: Vec<u64>,
        /// Seconds each rate is produced
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Bootstrap servers (default: KAFKA_BROKERS, else localhost:9092)
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// fetch.wait.max.ms of the job's source and of both readers: how
        /// long a broker may hold a fetch that has no new data (librdkafka's
        /// default is 500; a broker that holds fetches until then adds up
        /// to that much on each hop)
        #[arg(long, default_value_t = 5)]
        fetch_wait_ms: u64,
        /// linger.ms of the producer feeding the input (both paths include it)
        #[arg(long, default_value_t = 1)]
        producer_linger_ms: u64,
        /// linger.ms of the job's Kafka sink (default: the sink's own)
        #[arg(long)]
        sink_linger_ms: Option<u64>,
    },
    /// Writes the benchmarks' trade records as JSON Lines, for running the
    /// same questions through other engines (benches/vs_duckdb.py)
    Trades {
        /// The file to write
        path: PathBuf,
        #[arg(long, default_value_t = 5_000_000)]
        records: u64,
        /// Distinct symbols
        #[arg(long, default_value_t = 1000)]
        keys: u64,
    },
    /// Stateless pipeline (filter + projection) vs decode-only, on JSON Lines
    Stateless {
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        #[command(flatten)]
        run: BenchRun,
        /// Use this JSON Lines file of trades instead of generating one
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Tumbling and sliding window aggregates vs the stateless pipeline
    Window {
        #[arg(long, default_value_t = 5_000_000)]
        records: u64,
        /// Distinct group keys (symbols)
        #[arg(long, default_value_t = 1000)]
        keys: u64,
        #[command(flatten)]
        run: BenchRun,
        /// Use this JSON Lines file of trades instead of generating one
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Stream–table enrichment vs the stateless pipeline
    Join {
        #[arg(long, default_value_t = 5_000_000)]
        records: u64,
        /// Rows of the table (and distinct keys in the stream)
        #[arg(long, default_value_t = 100_000)]
        table_rows: u64,
        /// Also join the same table held in this PostgreSQL server (a URL),
        /// looked up by key with two cache sizes
        #[arg(long)]
        postgres: Option<String>,
        #[command(flatten)]
        run: BenchRun,
    },
    /// Results written into PostgreSQL (append, upsert) vs the null sink
    Postgres {
        /// The server (postgresql://user:password@host:port/db)
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Distinct symbols (the upsert's keys)
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        #[command(flatten)]
        run: BenchRun,
    },
    /// Interval join of two generated streams vs the stateless pipeline
    Interval {
        /// Records in each stream
        #[arg(long, default_value_t = 2_000_000)]
        records: u64,
        #[arg(long, default_value_t = 1000)]
        keys: u64,
        #[command(flatten)]
        run: BenchRun,
    },
}

/// What each `bench` subcommand measures.
pub fn bench_suite(which: BenchCommand) -> bench::Suite<'static> {
    let suite =
        |title, queries, baseline, baseline_label, records, keys, run: BenchRun| bench::Suite {
            title,
            queries,
            baseline,
            baseline_label,
            records,
            keys,
            batch_size: run.batch_size,
            runs: run.runs,
            file: None,
            table_rows: 0,
            second_stream: false,
            more: None,
        };
    let against_stateless = "stateless pipeline";
    match which {
        BenchCommand::Stateless { records, run, file } => bench::Suite {
            file,
            ..suite(
                "Stateless throughput",
                bench::QUERIES,
                1,
                "decode-only (same columns)",
                records,
                8,
                run,
            )
        },
        BenchCommand::Window {
            records,
            keys,
            run,
            file,
        } => bench::Suite {
            file,
            ..suite(
                "Windowed aggregation",
                bench::WINDOW_QUERIES,
                0,
                against_stateless,
                records,
                keys,
                run,
            )
        },
        BenchCommand::Join {
            records,
            table_rows,
            postgres,
            run,
        } => bench::Suite {
            table_rows,
            more: postgres.map(crate::bench::postgres::lookup_rows),
            ..suite(
                "Stream–table join",
                bench::JOIN_QUERIES,
                0,
                against_stateless,
                records,
                table_rows,
                run,
            )
        },
        BenchCommand::Kafka { .. }
        | BenchCommand::Latency { .. }
        | BenchCommand::Nexmark { .. }
        | BenchCommand::Checkpoint(_)
        | BenchCommand::ScaleOut(_)
        | BenchCommand::Takeover(_)
        | BenchCommand::Trades { .. }
        | BenchCommand::Postgres { .. } => {
            unreachable!(
                "bench kafka, latency, nexmark, checkpoint, scale-out, takeover, trades and postgres are dispatched before the file suites"
            )
        }
        BenchCommand::Interval { records, keys, run } => bench::Suite {
            second_stream: true,
            ..suite(
                "Interval join of two streams",
                bench::INTERVAL_QUERIES,
                0,
                against_stateless,
                records,
                keys,
                run,
            )
        },
    }
}
