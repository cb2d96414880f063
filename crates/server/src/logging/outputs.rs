//! Where log lines go besides the console: a file rotated by size, age and
//! count, and syslog over UDP.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::Level;

use crate::config::schema::Rotation;

/// A log file that is moved aside to `<path>.1` (older ones to `.2`, ...)
/// when it would pass `max_size` or has been written for `max_age`; at most
/// `max_backups` old files are kept.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    opened: SystemTime,
    max_size: Option<u64>,
    max_age: Option<Duration>,
    max_backups: u32,
}

impl RotatingFile {
    pub fn open(path: &Path, rotation: Option<&Rotation>) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            opened: SystemTime::now(),
            max_size: rotation.and_then(|r| r.max_size).map(|s| s.0),
            max_age: rotation.and_then(|r| r.max_age).map(|d| d.0),
            max_backups: rotation.and_then(|r| r.max_backups).unwrap_or(10),
        })
    }

    /// Appends `line` and a newline, rotating first when due.
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        let too_big = self
            .max_size
            .is_some_and(|max| self.size > 0 && self.size + len > max);
        let too_old = self
            .max_age
            .is_some_and(|age| self.opened.elapsed().unwrap_or_default() >= age);
        if too_big || too_old {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    fn backup(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.max_backups == 0 {
            self.file = File::create(&self.path)?;
        } else {
            let _ = std::fs::remove_file(self.backup(self.max_backups));
            for n in (1..self.max_backups).rev() {
                let from = self.backup(n);
                if from.exists() {
                    std::fs::rename(&from, self.backup(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.backup(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        self.opened = SystemTime::now();
        Ok(())
    }
}

/// RFC 5424 messages over UDP, facility `user`.
pub struct Syslog {
    socket: UdpSocket,
    hostname: String,
    pid: u32,
}

impl Syslog {
    pub fn connect(host: &str, port: u16) -> io::Result<Self> {
        let socket = UdpSocket::bind(("0.0.0.0", 0))?;
        socket.connect((host, port))?;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "-".into());
        Ok(Self {
            socket,
            hostname,
            pid: std::process::id(),
        })
    }

    /// Sends one record; a lost datagram is not an error (syslog over UDP
    /// is best effort).
    pub fn send(&self, level: Level, message: &str) {
        let severity = match level {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        let facility_user = 1;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let timestamp = chrono::DateTime::from_timestamp_micros(now)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
            .unwrap_or_else(|| "-".into());
        let datagram = format!(
            "<{}>1 {timestamp} {} velostream {} - - {message}",
            facility_user * 8 + severity,
            self.hostname,
            self.pid
        );
        let _ = self.socket.send(datagram.as_bytes());
    }
}
