//! Generative testing of everything that reads untrusted input, on the
//! stable toolchain: the SQL front end (parse, plan, explain, operator
//! building), the JSON and CSV decoders with declared schemas, the
//! configuration loader and the API's deployment bodies. Each target
//! mutates a committed seed corpus (`tests/fuzz/corpus/<target>/`, plus
//! the conformance specs' SQL and inputs) for a bounded time and fails on
//! the first panic, keeping the input that caused it under
//! `$CARGO_TARGET_DIR/fuzz-crashes/`.
//!
//! `scripts/fuzz.sh TARGET SECONDS` runs one target for longer;
//! `VELOSTREAM_FUZZ_SECONDS` (default 2) bounds each target here, and
//! `VELOSTREAM_FUZZ_SEED` picks the random sequence (default fixed, so a
//! run is reproducible).

use std::collections::{BTreeMap, VecDeque};
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use velostream_connectors::format::decode::{BatchDecoder, Origin};
use velostream_connectors::format::infer::infer_schema;
use velostream_connectors::format::projected_json::ProjectedJson;
use velostream_connectors::RecordFormat;
use velostream_engine::{JobMetrics, PipelineBuilder};
use velostream_sql::{parse_application, ApplicationPlanner, InferError, SourceResolver};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// splitmix64: a small, seedable generator (reproducible runs).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four mutations of `input`: byte flips, insertions and deletions,
/// duplicated ranges, dictionary tokens, splices from another seed.
fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>], dict: &[&str]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next() as u8),
            2 if !out.is_empty() => {
                let len = rng.below(16).min(out.len() - at.min(out.len()));
                out.drain(at.min(out.len())..at.min(out.len()) + len);
            }
            3 if !out.is_empty() => {
                let start = rng.below(out.len());
                let len = rng.below(32).min(out.len() - start);
                let piece = out[start..start + len].to_vec();
                out.splice(at..at, piece);
            }
            4 | 5 if !dict.is_empty() => {
                let token = format!(" {} ", dict[rng.below(dict.len())]);
                out.splice(at..at, token.into_bytes());
            }
            _ if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let start = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[start..]);
            }
            _ => {}
        }
    }
    out
}

/// Runs `target` on mutations of `seeds` until the time is up; every
/// input is tried under `catch_unwind`. Prints the count and fails on a
/// panic, writing the input where it can be replayed.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, dict: &[&str], mut target: impl FnMut(&[u8])) {
    let seconds: u64 = std::env::var("VELOSTREAM_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let seed: u64 = std::env::var("VELOSTREAM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED);
    assert!(!seeds.is_empty(), "{name}: no seeds");
    println!("fuzz {name}: seed {seed}, {seconds} s");
    let crashes =
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
            .join("fuzz-crashes");
    // the input being tried, kept where a panic hook finds it: even a panic
    // that aborts the process (one that cannot unwind) leaves its input
    static CURRENT: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
    let hook_file = crashes.join(format!("{name}-last-panic.bin"));
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(input) = CURRENT.lock() {
            let _ = std::fs::create_dir_all(hook_file.parent().unwrap());
            let _ = std::fs::write(&hook_file, &*input);
        }
        default_hook(info);
    }));
    let mut rng = Rng(seed ^ name.len() as u64);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut tried, mut panics) = (0u64, 0u64);
    let mut first_panic = None;
    // the seeds themselves first, then mutations
    let mut queue: VecDeque<Vec<u8>> = seeds.iter().cloned().collect();
    while Instant::now() < deadline || !queue.is_empty() {
        let input = queue.pop_front().unwrap_or_else(|| {
            let base = rng.below(seeds.len());
            mutate(&mut rng, &seeds[base], &seeds, dict)
        });
        tried += 1;
        if let Ok(mut current) = CURRENT.lock() {
            current.clear();
            current.extend_from_slice(&input);
        }
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            panics += 1;
            if first_panic.is_none() {
                let _ = std::fs::create_dir_all(&crashes);
                let file = crashes.join(format!("{name}-{tried}.bin"));
                let _ = std::fs::write(&file, &input);
                first_panic = Some(file);
            }
        }
    }
    let _ = std::panic::take_hook();
    println!("fuzz {name}: {tried} inputs tried, {panics} panics in {seconds} s (seed {seed})");
    assert_eq!(
        panics, 0,
        "{name}: the first crashing input is in {first_panic:?}"
    );
}

/// The conformance specs' cases: (SQL, each input's JSON Lines text).
fn conformance_cases() -> Vec<(String, BTreeMap<String, String>)> {
    let mut cases = Vec::new();
    let dir = repo().join("tests/conformance");
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if entry.path().extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let Ok(spec) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) else {
            continue;
        };
        for case in spec["cases"].as_sequence().into_iter().flatten() {
            let Some(sql) = case["sql"].as_str() else {
                continue;
            };
            let inputs = case["inputs"]
                .as_mapping()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect();
            cases.push((sql.to_string(), inputs));
        }
    }
    cases
}

/// Committed seeds of `target` (one file each).
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = repo().join("tests/fuzz/corpus").join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    seeds.sort();
    seeds
}

/// Source schemas for planning: inferred from every spec input of that name.
struct Schemas(BTreeMap<String, SchemaRef>);

impl SourceResolver for Schemas {
    fn infer_schema(
        &self,
        name: &str,
        _properties: &BTreeMap<String, String>,
    ) -> Result<SchemaRef, InferError> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no source {name}").into())
    }
}

#[test]
fn fuzz_sql() {
    let cases = conformance_cases();
    let mut schemas = BTreeMap::new();
    for (_, inputs) in &cases {
        for (name, rows) in inputs {
            if let Ok(schema) = infer_schema(RecordFormat::JsonLines, Cursor::new(rows.as_bytes()))
            {
                schemas
                    .entry(name.clone())
                    .or_insert_with(|| Arc::new(schema));
            }
        }
    }
    // every source is configured, so planning goes as far as the SQL allows
    let declarations: String = schemas
        .keys()
        .map(|n| {
            format!("CREATE STREAM {n} WITH ('type' = 'file_source', 'path' = '{n}.jsonl');\n")
        })
        .collect();
    let resolver = Schemas(schemas);
    let mut seeds: Vec<Vec<u8>> = cases
        .iter()
        .map(|(sql, _)| sql.clone().into_bytes())
        .collect();
    seeds.extend(corpus("sql"));
    let dict = [
        "SELECT", "FROM", "WHERE", "GROUP BY", "WINDOW TUMBLING(ts, 1m)", "SLIDING(ts, 1h, 1ms)",
        "SESSION(ts, 0s)", "EMIT CHANGES", "EMIT FINAL", "JOIN", "LEFT JOIN", "ON", "WITHIN 1h",
        "OVER (PARTITION BY id ORDER BY id ROWS BETWEEN 99999999999999999999 PRECEDING AND CURRENT ROW)",
        "LIMIT 18446744073709551615", "CAST(", "AS BIGINT)", "/ 0", "(", ")", ",", ";", "'", "\"",
        "INTERVAL '1' HOUR", "PRIMARY KEY", "WITH ('error.policy' = 'skip')", "NULL", "99999999999999999999999999999999999999999",
        "-- @name: ../x\n", "CREATE TABLE t AS", "CREATE STREAM s AS", "COUNT(*)", "SUM(", "HEADER('k')",
        "FOR SYSTEM_TIME AS OF", "TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '0' SECOND))", "_window_start",
    ];
    let metrics = Arc::new(JobMetrics::default());
    fuzz("sql", seeds, &dict, |input| {
        let text = format!("{declarations}{}", String::from_utf8_lossy(input));
        let Ok(statements) = parse_application(&text) else {
            return;
        };
        let Ok(plans) = ApplicationPlanner::new(&resolver).plan(&statements) else {
            return;
        };
        for plan in &plans {
            let _ = format!("{plan}");
            let _ = PipelineBuilder::new().build(plan, true, metrics.clone());
        }
    });
}

/// A declared schema of every kind of column the decoders convert.
fn declared() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("amount", DataType::Decimal128(12, 2), true),
        Field::new("price", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("flag", DataType::Boolean, true),
        Field::new("day", DataType::Date32, true),
    ]))
}

/// Decodes `input` to its end as `format`, as a file source does.
fn decode_all(format: RecordFormat, input: &[u8]) {
    let schema = declared();
    let mut decoder = BatchDecoder::new(format, schema.clone(), schema, 7).unwrap();
    decoder.set_max_record_bytes(4096);
    let metrics = JobMetrics::default();
    let mut chunk = input.to_vec();
    if !chunk.ends_with(b"\n") {
        chunk.push(b'\n');
    }
    let mut pos = 0;
    let mut out = VecDeque::new();
    while pos < chunk.len() {
        let origin = Origin::Lines {
            name: "fuzz",
            first_line: 1,
        };
        match decoder.decode_next(&chunk[pos..], origin, &mut &metrics, &mut out) {
            Ok(0) | Err(_) => break,
            Ok(n) => pos += n,
        }
        out.clear();
    }
}

/// The conformance inputs' lines, and the committed seeds of `target`.
fn record_seeds(target: &str) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = conformance_cases()
        .into_iter()
        .flat_map(|(_, inputs)| inputs.into_values())
        .map(String::into_bytes)
        .collect();
    seeds.sort();
    seeds.dedup();
    seeds.truncate(200);
    seeds.extend(corpus(target));
    seeds
}

/// The JSON grammar's punctuation, in the JSON decoders' dictionaries.
const JSON_SYNTAX: &[&str] = &["{", "}", "[", "]", ":", ","];

#[test]
fn fuzz_json_decoder() {
    let dict = [
        JSON_SYNTAX,
        &[
            "\"id\"",
            "\"amount\"",
            "\"ts\"",
            "\"day\"",
            "null",
            "true",
            "1e309",
            "-0",
            "99999999999999999999999",
            "\"2023-11-14T22:13:20Z\"",
            "\"\\u0000\"",
            "\n",
            "{\"id\": 1} {\"id\": 2}",
            "\"12.345\"",
            "[[[[[[[[",
        ],
    ]
    .concat();
    fuzz("json", record_seeds("json"), &dict, |input| {
        decode_all(RecordFormat::JsonLines, input)
    });
}

/// The projected JSON decoder against arrow-json on the same records:
/// whatever batch it reads is exactly the batch arrow-json reads (what it
/// declines, arrow-json decodes in the source).
fn projected_agrees_with_arrow_json(input: &[u8]) {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("amount", DataType::Decimal128(12, 2), true),
        Field::new("price", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("flag", DataType::Boolean, true),
        Field::new("n", DataType::Int32, true),
    ]));
    let mut projected = ProjectedJson::new(&schema).expect("types the decoder reads");
    let Ok(decoded) = projected.decode(input, 1000, 4096) else {
        return;
    };
    let region = &input[..decoded.consumed];
    let mut arrow = arrow_json::ReaderBuilder::new(schema)
        .with_batch_size(100_000)
        .with_coerce_primitive(true)
        .build_decoder()
        .unwrap();
    let read = arrow.decode(region).and_then(|_| arrow.flush());
    match read {
        Ok(batch) => assert_eq!(decoded.batch, batch, "{}", String::from_utf8_lossy(region)),
        Err(e) => panic!(
            "read a batch arrow-json refuses ({e}): {}",
            String::from_utf8_lossy(region)
        ),
    }
}

#[test]
fn fuzz_projected_json_decoder() {
    let dict = [
        JSON_SYNTAX,
        &[
            "\"id\"",
            "\"amount\"",
            "\"price\"",
            "\"name\"",
            "\"flag\"",
            "\"n\"",
            "null",
            "true",
            "false",
            "1e309",
            "-0",
            "1.5",
            "2e3",
            "99999999999999999999999",
            "\"12.345\"",
            "\"\\u00e9\"",
            "\"\\n\"",
            "\n",
            " ",
            "{\"id\": 1} {\"id\": 2}",
            "01",
            "1.2.3",
        ],
    ]
    .concat();
    fuzz(
        "projected_json",
        record_seeds("json"),
        &dict,
        projected_agrees_with_arrow_json,
    );
}

#[test]
fn fuzz_csv_decoder() {
    let dict = [
        ",",
        "\"",
        "\"\"",
        "\n",
        "\r\n",
        "1",
        "12.34",
        "true",
        "2023-11-14",
        "x",
        ",,,,,,,,",
    ];
    fuzz("csv", corpus("csv"), &dict, |input| {
        decode_all(
            RecordFormat::Csv {
                header: false,
                delimiter: b',',
            },
            input,
        )
    });
}

#[test]
fn fuzz_configuration() {
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(repo().join("config/guide"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    seeds.sort();
    seeds.extend(corpus("config"));
    let dict = [
        "velostream:",
        "security:",
        "auth:",
        "mode: token",
        "tokens_file: /nonexistent",
        "limits:",
        "max_sql_bytes: 1e99",
        "${VAR}",
        "${",
        ": ",
        "- ",
        "\n  ",
        "[",
        "{",
        "&a",
        "*a",
        "checkpoint_interval: -1",
        "port: 99999",
        "batch_size: 18446744073709551616",
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    let env = velostream_server::config::Environment::default();
    fuzz("config", seeds, &dict, |input| {
        std::fs::write(&file, input).unwrap();
        let _ = velostream_server::config::load(std::slice::from_ref(&file), &env);
    });
}

/// Deployment bodies through the real router and its access guard, as an
/// admin; the launcher refuses every application, so nothing runs.
#[test]
fn fuzz_api_bodies() {
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::Request;
    use tower::ServiceExt;
    use velostream_server::auth::{Authenticator, Peer};
    use velostream_server::config::schema::{Auth, AuthMode, Security};
    use velostream_server::http::{health_routes, ServiceState};
    use velostream_server::metrics::ServiceMetrics;
    use velostream_server::supervisor::{LaunchError, Launcher, Supervisor};

    struct Refusing;
    impl Launcher for Refusing {
        fn launch(&self, _: &str, _: &Path) -> Result<Vec<velostream_engine::Job>, LaunchError> {
            Err("not in this test".into())
        }
        fn validate(&self, _: &str, _: &Path) -> Result<(), String> {
            Err("not in this test".into())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "- {{name: ci, role: admin, sha256: {}}}\n",
            velostream_server::auth::tokens::digest_hex("fuzz-admin")
        ),
    )
    .unwrap();
    let security = Security {
        auth: Some(Auth {
            mode: AuthMode::Token,
            tokens_file: Some(tokens),
            identities: BTreeMap::new(),
        }),
        ..Security::default()
    };
    let metrics = Arc::new(ServiceMetrics::new().unwrap());
    let state = Arc::new(ServiceState {
        supervisor: Supervisor::new(Arc::new(Refusing), metrics.clone(), None),
        metrics,
        operation_timeout: Duration::from_secs(1),
        deploy_dir: dir.path().join("applications"),
        environment: None,
        dependencies: Default::default(),
        auth: Arc::new(Authenticator::from_config(Some(&security)).unwrap()),
        limits: Default::default(),
        deploying: Default::default(),
    });
    let router = health_routes(state).layer(MockConnectInfo(Peer {
        addr: "127.0.0.1:1".parse().unwrap(),
        certificate: None,
    }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut seeds = corpus("api");
    seeds.push(br#"{"name": "copy", "sql": "SELECT 1"}"#.to_vec());
    let dict = [
        "{",
        "}",
        "\"name\"",
        "\"sql\"",
        ":",
        ",",
        "\"../x\"",
        "\"\"",
        "null",
        "[]",
        "\"\\u0000\"",
    ];
    fuzz("api", seeds, &dict, |input| {
        let request = Request::post("/jobs")
            .header("content-type", "application/json")
            .header("authorization", "Bearer fuzz-admin")
            .body(Body::from(input.to_vec()))
            .unwrap();
        let response = runtime.block_on(router.clone().oneshot(request)).unwrap();
        // a body is never accepted here (the launcher refuses), and never a server error
        assert!(response.status().is_client_error(), "{}", response.status());
    });
}
