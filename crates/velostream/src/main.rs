//! `velostream`: run, validate, explain and test streaming SQL applications;
//! produce to and consume from Kafka topics.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use velostream::app::{run_jobs, AppError, Application, RunOptions};

/// Arrow batches are allocated on the threads that decode them and freed
/// on the job's thread; mimalloc frees across threads without the lock
/// contention glibc's arenas have there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use velostream::bench::cli::{bench_suite, BenchCommand};
use velostream::bench::{self, kafka as bench_kafka, nexmark};
use velostream::conformance::{find_specs, run_spec_file};
use velostream::progress::{human, Progress};
use velostream::tools::kafka as kafka_tools;
use velostream_sql::PropertyOverrides;

#[derive(Parser)]
#[command(
    name = "velostream",
    version,
    about = "Streaming SQL over Kafka topics, files and databases"
)]
struct Cli {
    /// Configuration of the long-running service (repeatable; files merge)
    #[arg(long, value_name = "FILE")]
    config: Vec<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run an application in the foreground until its bounded inputs end
    Run {
        /// The application's .sql file
        app: PathBuf,
        /// Configuration file (performance.batch_size and velostream.kafka are used)
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// No progress line or summary on stderr
        #[arg(short, long)]
        quiet: bool,
        /// Records per batch (default 1000, or performance.batch_size)
        #[arg(long)]
        batch_size: Option<usize>,
        /// Override a property, e.g. --set trades.path=other.jsonl
        #[arg(long = "set", value_name = "NAME.KEY=VALUE")]
        set: Vec<String>,
        #[command(flatten)]
        state: velostream::state_args::StateArgs,
    },
    /// Check an application: SQL, sources, sinks and operators
    Validate { app: PathBuf },
    /// Print the streaming plan of every statement
    Explain { app: PathBuf },
    /// Run conformance specs (files or directories of *.yaml)
    Test {
        #[arg(default_value = "tests/conformance")]
        specs: Vec<PathBuf>,
    },
    /// The connectors, their keys (with defaults) and system columns, as
    /// Markdown (docs/connectors.md is this output)
    Connectors {
        /// Only this connector (a 'type' value)
        name: Option<String>,
    },
    /// Every function a statement can call, with its signatures (as
    /// Markdown with --markdown: docs/functions.md is that output)
    Functions {
        /// Print the Markdown reference instead of the plain list
        #[arg(long)]
        markdown: bool,
    },
    /// Benchmarks
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Send JSON Lines (a file or stdin) to a Kafka topic, one message per line
    Produce {
        /// Topic (created if missing)
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        cluster: kafka_tools::ClusterArgs,
        /// JSON field whose value becomes the message key
        #[arg(long)]
        key_field: Option<String>,
        /// Partitions of a topic that does not exist yet
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// JSON Lines file (default: stdin)
        file: Option<PathBuf>,
    },
    /// Checkpoints in the state directory: list, back up, restore, reset
    #[command(subcommand)]
    State(velostream::tools::state::StateCommand),
    /// Consumer-group offsets: export to and import from JSON
    #[command(subcommand)]
    Offsets(kafka_tools::OffsetsCommand),
    /// Print the messages of a Kafka topic from its start
    Consume {
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        cluster: kafka_tools::ClusterArgs,
        /// Stop after this many messages
        #[arg(long)]
        max: Option<u64>,
        /// Stop after this many seconds without a message
        #[arg(long, default_value_t = 5.0)]
        idle_secs: f64,
        /// Print `key<TAB>payload`
        #[arg(long)]
        keys: bool,
    },
    /// The pre-production checks: configuration, Kafka, database, state and
    /// log directories, resource limits (exit 1 when one fails)
    Check {
        #[arg(long, value_name = "FILE", required = true)]
        config: Vec<PathBuf>,
        /// Processes that will run the configured applications: warns when
        /// a Kafka topic they read has fewer partitions (the extra
        /// processes would idle)
        #[arg(long, value_name = "N")]
        replicas: Option<usize>,
    },
    /// Probe a running service's /health and /metrics (exit 1 when one fails)
    Health {
        #[arg(long, default_value = "http://localhost:8080/health")]
        url: String,
        #[arg(long, default_value = "http://localhost:9090/metrics")]
        metrics_url: String,
        #[command(flatten)]
        auth: velostream::tools::api_client::ApiAuth,
    },
    /// The Nexmark event generator
    #[command(subcommand)]
    Nexmark(NexmarkCommand),
    /// The long-running service (configured by --config)
    Server {
        #[arg(long, value_name = "FILE")]
        config: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum NexmarkCommand {
    /// Write N generated events as person.jsonl, auction.jsonl and bid.jsonl
    Generate {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value = "nexmark-data")]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Events per second of event time
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Produce to the Kafka topics <prefix>person, <prefix>auction and
        /// <prefix>bid on these brokers instead of writing files (`--kafka`
        /// alone: KAFKA_BROKERS, else localhost:9092)
        #[arg(long, value_name = "BROKERS", num_args = 0..=1, default_missing_value = "")]
        kafka: Option<String>,
        /// Topic name prefix for --kafka
        #[arg(long, default_value = "nexmark-")]
        topic_prefix: String,
        /// Partitions of topics --kafka creates
        #[arg(long, default_value_t = 3)]
        partitions: i32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Some(Command::Server { .. }))
        || (cli.command.is_none() && !cli.config.is_empty());
    if !serving {
        // (the service keeps ignoring SIGPIPE: a client hanging up must not end it)
        restore_sigpipe();
        // warnings of the engine and connectors as `warning: ...` lines on stderr
        let _ =
            tracing::subscriber::set_global_default(velostream_server::logging::cli_subscriber());
    }
    let result = dispatch(cli);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// Runs the command `cli` names.
fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Some(Command::Run {
            app,
            config,
            quiet,
            batch_size,
            set,
            state,
        }) => run(app, config, quiet, batch_size, set, state),
        Some(Command::Validate { app }) => validate(app),
        Some(Command::Explain { app }) => explain(app),
        Some(Command::Test { specs }) => test(specs),
        Some(Command::Connectors { name }) => velostream_connectors::registry::markdown(name.as_deref())
            .map(|text| print!("{text}"))
            .map_err(|e| Failure::Usage(e.to_string())),
        Some(Command::Functions { markdown }) => {
            let library = velostream_sql::function_list::function_library();
            if markdown {
                print!("{}", velostream_sql::function_list::render_markdown(&library));
            } else {
                print!("{}", velostream_sql::function_list::render_text(&library));
            }
            Ok(())
        }
        Some(Command::Bench(BenchCommand::Trades {
            path,
            records,
            keys,
        })) => velostream::bench::generate_trades(&path, records, keys)
            .map(|bytes| {
                eprintln!(
                    "{records} trade records ({:.1} MB) written to {}",
                    bytes as f64 / 1e6,
                    path.display()
                )
            })
            .map_err(|e| Failure::Runtime(format!("cannot write {}: {e}", path.display()))),
        Some(Command::Bench(BenchCommand::ScaleOut(bench))) => {
            let brokers = kafka_tools::brokers(bench.brokers.clone()).map_err(Failure::Usage)?;
            velostream::bench::scale_out::run(&bench, &brokers)
                .map(|report| println!("{report}"))
                .map_err(Failure::Runtime)
        }
        Some(Command::Bench(BenchCommand::Takeover(bench))) => {
            let brokers = kafka_tools::brokers(bench.brokers.clone()).map_err(Failure::Usage)?;
            velostream::bench::takeover::run(&bench, &brokers)
                .map(|report| println!("{report}"))
                .map_err(Failure::Runtime)
        }
        Some(Command::Bench(BenchCommand::Checkpoint(bench))) => {
            velostream::bench::checkpoint::run(&bench)
                .map(|report| println!("{report}"))
                .map_err(Failure::Runtime)
        }
        Some(Command::Bench(BenchCommand::Postgres {
            url,
            records,
            keys,
            run,
        })) => velostream::bench::postgres::run_sinks(&url, records, keys, run.batch_size, run.runs)
            .map(|report| println!("{report}"))
            .map_err(Failure::Runtime),
        Some(Command::Bench(BenchCommand::Kafka {
            records,
            brokers,
            partitions,
            batch_size,
            runs,
        })) => bench_kafka::run(bench_kafka::KafkaBench {
            brokers: kafka_tools::brokers(brokers).map_err(Failure::Usage)?,
            records,
            partitions,
            batch_size,
            runs,
        })
        .map(|report| println!("{report}"))
        .map_err(Failure::Runtime),
        Some(Command::Bench(BenchCommand::Latency {
            rates,
            seconds,
            brokers,
            partitions,
            batch_size,
            fetch_wait_ms,
            producer_linger_ms,
            sink_linger_ms,
        })) => velostream::bench::latency::run(velostream::bench::latency::LatencyBench {
            brokers: kafka_tools::brokers(brokers).map_err(Failure::Usage)?,
            rates,
            seconds,
            partitions,
            batch_size,
            fetch_wait_ms,
            producer_linger_ms,
            sink_linger_ms,
        })
        .map(|report| println!("{report}"))
        .map_err(Failure::Runtime),
        Some(Command::Bench(BenchCommand::Nexmark {
            events,
            queries,
            dir,
            batch_size,
            generator_only,
            kafka,
            parallelism,
        })) => nexmark::bench(nexmark::NexmarkBench {
            queries_dir: dir,
            queries: queries.split(',').map(|q| q.trim().to_string()).collect(),
            events,
            batch_size,
            files: !generator_only,
            kafka: kafka
                .map(|b| kafka_tools::brokers(Some(b).filter(|b| !b.is_empty())))
                .transpose()
                .map_err(Failure::Usage)?,
            parallelism,
        })
        .map(|report| println!("{report}"))
        .map_err(Failure::Runtime),
        Some(Command::Nexmark(NexmarkCommand::Generate {
            events,
            seed,
            rate,
            kafka: Some(brokers),
            topic_prefix,
            partitions,
            ..
        })) => {
            let brokers = kafka_tools::brokers(Some(brokers).filter(|b| !b.is_empty()))
                .map_err(Failure::Usage)?;
            nexmark::generate_to_kafka(&brokers, &topic_prefix, events, seed, rate, partitions)
                .map(|[p, a, b]| {
                    eprintln!(
                        "produced {p} persons, {a} auctions, {b} bids to {topic_prefix}person, {topic_prefix}auction, {topic_prefix}bid"
                    )
                })
                .map_err(Failure::Runtime)
        }
        Some(Command::Nexmark(NexmarkCommand::Generate {
            events,
            out,
            seed,
            rate,
            ..
        })) => nexmark::generate(&out, events, seed, rate)
            .map(|[p, a, b]| {
                eprintln!(
                    "wrote {p} persons, {a} auctions, {b} bids to {}",
                    out.display()
                )
            })
            .map_err(|e| Failure::Runtime(e.to_string())),
        Some(Command::Bench(which)) => bench::run_suite(bench_suite(which))
            .map(|report| println!("{report}"))
            .map_err(Failure::Runtime),
        Some(Command::Produce {
            topic,
            cluster,
            key_field,
            partitions,
            file,
        }) => kafka_tools::produce(
            &cluster.client().map_err(Failure::Usage)?,
            &topic,
            file,
            key_field.as_deref(),
            partitions,
        )
        .map(|n| eprintln!("produced {n} messages to {topic}"))
        .map_err(Failure::Runtime),
        Some(Command::Consume {
            topic,
            cluster,
            max,
            idle_secs,
            keys,
        }) => kafka_tools::consume(
            &cluster.client().map_err(Failure::Usage)?,
            &topic,
            max,
            std::time::Duration::from_secs_f64(idle_secs.max(0.1)),
            keys,
        )
        .map(|n| eprintln!("consumed {n} messages from {topic}"))
        .map_err(Failure::Runtime),
        Some(Command::State(command)) => command.run().map_err(Failure::Runtime),
        Some(Command::Offsets(command)) => command.run().map_err(Failure::Runtime),
        Some(Command::Check { config, replicas }) => match velostream::tools::preflight::check(
            &config, replicas,
        ) {
            true => Ok(()),
            false => Err(Failure::Runtime("a pre-production check failed".into())),
        },
        Some(Command::Health {
            url,
            metrics_url,
            auth,
        }) => {
            match velostream::tools::preflight::health(&auth, &url, &metrics_url) {
                true => Ok(()),
                false => Err(Failure::Runtime("the service is unhealthy".into())),
            }
        }
        Some(Command::Server { config }) => serve([cli.config, config].concat()),
        None if !cli.config.is_empty() => serve(cli.config),
        None => Err(Failure::Usage(
            "nothing to do: run an application with `velostream run app.sql`, or start the service with `velostream --config config.yaml` (see --help)".into(),
        )),
    }
}

/// Output piped into a reader that stops early (`velostream explain app.sql
/// | head`) ends the process quietly, as other command-line tools do,
/// instead of failing a write (the Rust runtime ignores SIGPIPE).
fn restore_sigpipe() {
    // SAFETY: called at the start of `main`, before any thread exists, and
    // SIG_DFL is a valid disposition for SIGPIPE; `signal` touches no Rust state.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Exit code 2 for problems with what the user wrote, 1 for failures while running.
enum Failure {
    Usage(String),
    Runtime(String),
}

impl From<AppError> for Failure {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Sql { rendered, .. } => Failure::Usage(
                rendered
                    .trim_start_matches("error: ")
                    .trim_end()
                    .to_string(),
            ),
            AppError::Read { .. } => Failure::Usage(e.to_string()),
            AppError::Job { .. } => Failure::Runtime(e.to_string()),
        }
    }
}

fn run(
    app: PathBuf,
    config: Option<PathBuf>,
    quiet: bool,
    batch_size: Option<usize>,
    set: Vec<String>,
    state: velostream::state_args::StateArgs,
) -> Result<(), Failure> {
    // the same loader as the service: substitution, overrides, checks
    let (mut options, configured_state_dir) = match &config {
        Some(path) => {
            let loaded = velostream::settings::load(std::slice::from_ref(path))
                .map_err(|e| Failure::Usage(e.to_string()))?;
            (
                velostream::launcher::run_settings(&loaded),
                loaded.velostream.state_dir.clone(),
            )
        }
        None => (environment_options()?, None),
    };
    if let Some(b) = batch_size {
        options.batch_size = b.max(1);
    }
    options.overrides = parse_overrides(&set)?;
    state
        .apply(&mut options, configured_state_dir)
        .map_err(Failure::Usage)?;
    let application = Application::load(&app, &options)?;
    application.check()?;
    let jobs = application.build_jobs()?;
    stop_on_signals(jobs.iter().map(|j| j.cancel_handle()).collect())?;
    let progress = (!quiet).then(|| Progress::start(jobs.iter().map(|j| j.metrics()).collect()));
    let result = run_jobs(jobs);
    if let Some(p) = progress {
        p.stop();
    }
    let summaries = result?;
    if !quiet {
        for s in &summaries {
            let secs = s.elapsed.as_secs_f64().max(1e-9);
            eprintln!(
                "job {}: {} records in, {} out, {} malformed skipped{}{}, {:.2}s ({} records/s)",
                s.name,
                s.records_in,
                s.records_out,
                s.bad_records,
                if s.late_records > 0 {
                    format!(", {} late dropped", s.late_records)
                } else {
                    String::new()
                },
                if s.row_errors > 0 {
                    format!(", {} failing rows isolated (error.policy)", s.row_errors)
                } else {
                    String::new()
                },
                secs,
                human(s.records_in as f64 / secs)
            );
        }
    }
    Ok(())
}

/// The long-running service of `--config` files.
fn serve(files: Vec<PathBuf>) -> Result<(), Failure> {
    if files.is_empty() {
        return Err(Failure::Usage(
            "the service needs --config <file.yaml>".into(),
        ));
    }
    let config = velostream::settings::load(&files).map_err(|e| Failure::Usage(e.to_string()))?;
    let logging = velostream_server::logging::subscriber(
        config.logging.as_ref(),
        config.velostream.monitoring.log_level,
    )
    .map_err(Failure::Usage)?;
    let _ = tracing::subscriber::set_global_default(logging);
    let base = files[0].parent().map(PathBuf::from).unwrap_or_default();
    let launcher = Arc::new(velostream::launcher::AppLauncher::for_service(
        &config, &base,
    ));
    velostream_server::service::run(&config, &base, launcher).map_err(Failure::Runtime)
}

/// SIGINT/SIGTERM stop the jobs at their next batch boundary (results so
/// far flushed, source positions committed); a second signal exits at once.
fn stop_on_signals(cancels: Vec<Arc<AtomicBool>>) -> Result<(), Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .map_err(|e| Failure::Runtime(format!("cannot handle signals: {e}")))?;
    }
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for cancel in cancels {
            cancel.store(true, Ordering::Relaxed);
        }
    });
    Ok(())
}

fn parse_overrides(set: &[String]) -> Result<PropertyOverrides, Failure> {
    let mut overrides = PropertyOverrides::new();
    for item in set {
        let parsed = item
            .split_once('=')
            .and_then(|(k, v)| k.split_once('.').map(|(name, key)| (name, key, v)));
        match parsed {
            Some((name, key, value)) if !name.is_empty() && !key.is_empty() => {
                overrides
                    .entry(name.to_string())
                    .or_default()
                    .insert(key.to_string(), value.to_string());
            }
            _ => {
                return Err(Failure::Usage(format!(
                    "--set expects NAME.KEY=VALUE, got '{item}'"
                )))
            }
        }
    }
    Ok(overrides)
}

/// Run options from the environment's settings alone (`KAFKA_BROKERS`,
/// `DB_*`, `VELOSTREAM__*`), as `run`, `validate` and `explain` use them
/// without `--config`.
fn environment_options() -> Result<RunOptions, Failure> {
    let loaded = velostream::settings::load(&[]).map_err(|e| Failure::Usage(e.to_string()))?;
    Ok(velostream::launcher::run_settings(&loaded))
}

fn validate(app: PathBuf) -> Result<(), Failure> {
    let application = Application::load(&app, &environment_options()?)?;
    application.check()?;
    let names: Vec<_> = application.plans.iter().map(|p| p.name.as_str()).collect();
    println!(
        "ok: {} ({} job{}: {})",
        app.display(),
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    );
    Ok(())
}

fn explain(app: PathBuf) -> Result<(), Failure> {
    let application = Application::load(&app, &environment_options()?)?;
    for plan in &application.plans {
        print!("{plan}");
        match application.repartition(plan) {
            Ok(Some(step)) => println!(
                "\n  repartition: by hash of ({}) through topic '{}' (created with the input's partition count, read back by the consumer group of that name)",
                step.keys.join(", "),
                step.topic
            ),
            Ok(None) => println!(),
            Err(e) => println!("\n  repartition: {e}"),
        }
        println!();
    }
    Ok(())
}

fn test(paths: Vec<PathBuf>) -> Result<(), Failure> {
    let (mut passed, mut failed) = (0, 0);
    for file in find_specs(&paths) {
        for outcome in run_spec_file(&file) {
            match outcome.failure {
                None => {
                    passed += 1;
                    println!("PASS {}::{}", file.display(), outcome.name);
                }
                Some(why) => {
                    failed += 1;
                    println!(
                        "FAIL {}::{}\n{}\n",
                        file.display(),
                        outcome.name,
                        indent(&why)
                    );
                }
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 || passed == 0 {
        return Err(Failure::Runtime(if passed == 0 {
            "no conformance cases found".into()
        } else {
            format!("{failed} conformance cases failed")
        }));
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
