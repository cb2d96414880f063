//! `velostream produce` and `velostream consume`: put JSON Lines on a
//! topic and read a topic back, so a Kafka quick start needs no other tools.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use velostream_connectors::kafka::admin;

/// Which cluster a tool connects to, and with what settings: the same
/// `--config` files the service reads (their `velostream.kafka` section,
/// so TLS, SASL and credentials are the service's), with `--brokers`
/// naming another bootstrap list.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// Bootstrap servers (default: the configuration's, KAFKA_BROKERS, else localhost:9092)
    #[arg(long)]
    pub brokers: Option<String>,
    /// Configuration files whose `velostream.kafka` settings (security,
    /// credentials, cluster) the client uses (repeatable; files merge)
    #[arg(long = "config", value_name = "FILE")]
    pub config: Vec<PathBuf>,
}

impl ClusterArgs {
    /// The client the tools connect with: the cluster `--brokers` names,
    /// else the one the settings name (`--config`, `KAFKA_BROKERS`), else
    /// localhost, with the settings' security and credentials
    /// ([`crate::settings`]).
    pub fn client(&self) -> Result<ClientConfig, String> {
        let config = crate::settings::load(&self.config).map_err(|e| e.to_string())?;
        crate::settings::kafka_client(&config, self.brokers.as_deref())
    }

    /// The bootstrap list [`client`](Self::client) connects to.
    pub fn brokers(&self) -> Result<String, String> {
        self.client()
            .map(|c| c.get("bootstrap.servers").unwrap_or_default().to_string())
    }
}

/// The cluster the benchmarks and generators connect to: `flag`, else the
/// environment's (see [`ClusterArgs::client`]).
pub fn brokers(flag: Option<String>) -> Result<String, String> {
    ClusterArgs {
        brokers: flag,
        config: Vec::new(),
    }
    .brokers()
}

/// Sends each JSON line of `input` (stdin when `None`) as one message;
/// `key_field` names the field whose value becomes the message key.
pub fn produce(
    client: &ClientConfig,
    topic: &str,
    input: Option<PathBuf>,
    key_field: Option<&str>,
    partitions: i32,
) -> Result<u64, String> {
    admin::create_topic(client, topic, partitions).map_err(|e| e.to_string())?;
    let reader: Box<dyn BufRead> = match &input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut lines = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("reading line {}: {e}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let key = match key_field {
            Some(field) => match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(value) => match value.get(field) {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(serde_json::Value::Null) | None => None,
                    Some(other) => Some(other.to_string()),
                },
                // sent as it is: readers count and report it as malformed
                Err(e) => {
                    eprintln!(
                        "warning: line {} is not JSON ({e}); sent without a key",
                        n + 1
                    );
                    None
                }
            },
            None => None,
        };
        lines.push((key, line));
    }
    let mut config = client.clone();
    config.set("linger.ms", "5");
    admin::produce(
        &config,
        topic,
        lines
            .iter()
            .map(|(k, v)| (k.as_deref().map(str::as_bytes), v.as_bytes(), None)),
    )
    .map_err(|e| e.to_string())
}

/// Prints the messages of `topic` from its start (one payload per line, or
/// `key<TAB>payload` with `keys`) until `max` messages or `idle` without any.
pub fn consume(
    client: &ClientConfig,
    topic: &str,
    max: Option<u64>,
    idle: Duration,
    keys: bool,
) -> Result<u64, String> {
    let consumer = group_consumer(client, "velostream-consume")?;
    admin::assign_from_start(&consumer, topic, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut seen = 0u64;
    let mut last = Instant::now();
    while max.is_none_or(|m| seen < m) && last.elapsed() < idle {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if keys {
                    out.write_all(m.key().unwrap_or_default())
                        .and_then(|_| out.write_all(b"\t"))
                        .map_err(|e| e.to_string())?;
                }
                out.write_all(m.payload().unwrap_or_default())
                    .and_then(|_| out.write_all(b"\n"))
                    .map_err(|e| e.to_string())?;
                seen += 1;
                last = Instant::now();
            }
            Some(Err(e)) => return Err(format!("reading '{topic}': {e}")),
            None => {}
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(seen)
}

/// A consumer group's committed offsets, as `offsets export` writes them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct GroupOffsets {
    pub group: String,
    /// When they were read (ms since the Unix epoch).
    pub exported_at_ms: i64,
    pub offsets: Vec<PartitionOffset>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    /// The next offset the group reads.
    pub offset: i64,
}

fn group_consumer(client: &ClientConfig, group: &str) -> Result<BaseConsumer, String> {
    client
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("cannot create consumer: {e}"))
}

/// The committed offsets of `group` on `topics` (every topic of the
/// cluster when empty), for the guide's offset backup.
pub fn export_offsets(
    client: &ClientConfig,
    group: &str,
    topics: &[String],
) -> Result<GroupOffsets, String> {
    use rdkafka::consumer::Consumer;
    let timeout = Duration::from_secs(10);
    let consumer = group_consumer(client, group)?;
    let metadata = consumer.fetch_metadata(None, timeout).map_err(|e| {
        format!(
            "{} not reachable: {e}",
            client.get("bootstrap.servers").unwrap_or_default()
        )
    })?;
    let mut wanted = rdkafka::TopicPartitionList::new();
    for topic in metadata.topics() {
        if !topics.is_empty() && !topics.iter().any(|t| t == topic.name()) {
            continue;
        }
        for p in topic.partitions() {
            wanted.add_partition(topic.name(), p.id());
        }
    }
    for t in topics {
        if !metadata.topics().iter().any(|m| m.name() == t) {
            return Err(format!("topic '{t}' does not exist"));
        }
    }
    let offsets = admin::committed_offsets(&consumer, wanted, timeout)
        .map_err(|e| format!("cannot read the offsets of group '{group}': {e}"))?
        .into_iter()
        .map(|(topic, partition, offset)| PartitionOffset {
            topic,
            partition,
            offset,
        })
        .collect();
    Ok(GroupOffsets {
        group: group.to_string(),
        exported_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        offsets,
    })
}

/// Commits exported offsets for `group` (the group's members must be
/// stopped: a running member's next commit would overwrite them).
pub fn import_offsets(
    client: &ClientConfig,
    group: &str,
    offsets: &[PartitionOffset],
) -> Result<(), String> {
    use rdkafka::consumer::{CommitMode, Consumer};
    if offsets.is_empty() {
        return Err("the file holds no offsets".into());
    }
    let consumer = group_consumer(client, group)?;
    let mut list = rdkafka::TopicPartitionList::new();
    for o in offsets {
        list.add_partition_offset(&o.topic, o.partition, rdkafka::Offset::Offset(o.offset))
            .map_err(|e| e.to_string())?;
    }
    consumer.commit(&list, CommitMode::Sync).map_err(|e| {
        format!("cannot commit offsets for group '{group}' (are its members stopped?): {e}")
    })
}

/// `velostream offsets …`
#[derive(clap::Subcommand)]
pub enum OffsetsCommand {
    /// Write a consumer group's committed offsets as JSON (stdout or --to)
    Export {
        #[arg(long)]
        group: String,
        /// Only these topics (default: every topic the group has offsets on)
        #[arg(long = "topic")]
        topics: Vec<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
    },
    /// Commit offsets an export wrote for a group (its members must be stopped)
    Import {
        /// The export file
        file: PathBuf,
        /// The group to commit for (default: the exported group)
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

impl OffsetsCommand {
    pub fn run(self) -> Result<(), String> {
        match self {
            Self::Export {
                group,
                topics,
                cluster,
                to,
            } => {
                let exported = export_offsets(&cluster.client()?, &group, &topics)?;
                let text = serde_json::to_string_pretty(&exported).map_err(|e| e.to_string())?;
                match &to {
                    Some(path) => std::fs::write(path, text + "\n")
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
                    None => println!("{text}"),
                }
                eprintln!(
                    "exported {} partition offset(s) of group '{group}'",
                    exported.offsets.len()
                );
                Ok(())
            }
            Self::Import {
                file,
                group,
                cluster,
            } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let exported: GroupOffsets = serde_json::from_str(&text)
                    .map_err(|e| format!("{} is not an offsets export: {e}", file.display()))?;
                let group = group.unwrap_or(exported.group);
                import_offsets(&cluster.client()?, &group, &exported.offsets)?;
                eprintln!(
                    "committed {} partition offset(s) for group '{group}'",
                    exported.offsets.len()
                );
                Ok(())
            }
        }
    }
}
