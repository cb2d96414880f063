//! The Velostream `WINDOW` clause: `TUMBLING`, `SLIDING`/`HOPPING` and
//! `SESSION`, with or without an explicit event-time column, and the `EMIT`
//! mode that decides when window (or group) results leave the operator.

use std::fmt;
use std::time::Duration;

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::duration::{format_duration, parse_interval, parse_shorthand};
use crate::error::{Location, Result, SqlError};
use crate::script::{is_word, loc};

/// The shape of a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size: Duration },
    Sliding { size: Duration, advance: Duration },
    Session { gap: Duration },
}

/// A parsed `WINDOW` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    /// Event-time column named in the clause; `None` means the source's
    /// event time (`_event_time`).
    pub time_column: Option<String>,
    /// `PROCTIME()` as the time argument: windows on the time each record
    /// is processed (wall clock), closed as that clock passes their end.
    pub processing_time: bool,
    pub location: Location,
}

/// When an aggregate emits its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitMode {
    /// An updated row whenever a group (or window) changes.
    Changes,
    /// One row per group (or window) when it is complete.
    Final,
}

impl fmt::Display for EmitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmitMode::Changes => "CHANGES",
            EmitMode::Final => "FINAL",
        })
    }
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let col = match (&self.time_column, self.processing_time) {
            (_, true) => "PROCTIME(), ".to_string(),
            (Some(c), false) => format!("{c}, "),
            (None, false) => String::new(),
        };
        match &self.kind {
            WindowKind::Tumbling { size } => write!(f, "TUMBLING({col}{})", format_duration(*size)),
            WindowKind::Sliding { size, advance } => write!(
                f,
                "SLIDING({col}{}, {})",
                format_duration(*size),
                format_duration(*advance)
            ),
            WindowKind::Session { gap } => write!(f, "SESSION({col}{})", format_duration(*gap)),
        }
    }
}

/// True for the words that start a Velostream window specification.
pub fn is_window_function(token: &Token) -> bool {
    ["TUMBLING", "SLIDING", "HOPPING", "SESSION"]
        .iter()
        .any(|w| is_word(token, w))
}

/// Parses `TUMBLING(...)` etc.; `tokens` starts at the function name and
/// ends after its closing parenthesis.
pub fn parse_window(tokens: &[TokenWithSpan]) -> Result<WindowSpec> {
    let name_tok = &tokens[0];
    let name = match &name_tok.token {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        _ => unreachable!("caller checked is_window_function"),
    };
    let body = &tokens[2..tokens.len() - 1];
    let args = split_args(body);
    let location = loc(name_tok);
    let arity_error = |expected: &str| {
        SqlError::new(format!("{name} takes {expected}"), location).with_hint(
            "for example WINDOW TUMBLING(INTERVAL '1' MINUTE) or WINDOW TUMBLING(event_ts, 1m)",
        )
    };
    let (time_column, durations): (Option<String>, &[&[TokenWithSpan]]) =
        match (name.as_str(), args.len()) {
            ("TUMBLING", 1) | ("SESSION", 1) | ("SLIDING" | "HOPPING", 2) => (None, &args[..]),
            ("TUMBLING", 2) | ("SESSION", 2) | ("SLIDING" | "HOPPING", 3) => {
                if is_proctime(args[0]) {
                    (None, &args[1..])
                } else {
                    (Some(column_arg(args[0])?), &args[1..])
                }
            }
            ("TUMBLING", _) => {
                return Err(arity_error("a size, optionally preceded by a time column"))
            }
            ("SESSION", _) => {
                return Err(arity_error("a gap, optionally preceded by a time column"))
            }
            _ => {
                return Err(arity_error(
                    "a size and an advance, optionally preceded by a time column",
                ))
            }
        };
    let processing_time = args.len() > durations.len() && is_proctime(args[0]);
    let durations = durations
        .iter()
        .map(|arg| duration_arg(arg))
        .collect::<Result<Vec<_>>>()?;
    let kind = match name.as_str() {
        "TUMBLING" => WindowKind::Tumbling { size: durations[0] },
        "SESSION" => WindowKind::Session { gap: durations[0] },
        _ => WindowKind::Sliding {
            size: durations[0],
            advance: durations[1],
        },
    };
    check_window(&name, &kind, location)?;
    Ok(WindowSpec {
        kind,
        time_column,
        processing_time,
        location,
    })
}

fn split_args(tokens: &[TokenWithSpan]) -> Vec<&[TokenWithSpan]> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                out.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < tokens.len() || !out.is_empty() {
        out.push(&tokens[start..]);
    }
    out
}

/// A column name, optionally qualified (`o.ts`: the qualifier names the
/// stream the column belongs to, which is the windowed stream).
/// `PROCTIME()`: the processing-time argument of a window.
fn is_proctime(arg: &[TokenWithSpan]) -> bool {
    matches!(
        arg,
        [name, TokenWithSpan { token: Token::LParen, .. }, TokenWithSpan { token: Token::RParen, .. }]
            if is_word(&name.token, "PROCTIME")
    )
}

fn column_arg(arg: &[TokenWithSpan]) -> Result<String> {
    match arg {
        [TokenWithSpan {
            token: Token::Word(w),
            ..
        }]
        | [TokenWithSpan {
            token: Token::Word(_),
            ..
        }, TokenWithSpan {
            token: Token::Period,
            ..
        }, TokenWithSpan {
            token: Token::Word(w),
            ..
        }] => Ok(w.value.clone()),
        _ => Err(SqlError::new(
            "expected an event-time column name (or PROCTIME()) as the first window argument",
            arg.first().map(loc).unwrap_or_default(),
        )),
    }
}

/// A duration written as `INTERVAL '5' MINUTE`, `5 MINUTES` or the shorthand `5m`.
pub(crate) fn duration_arg(arg: &[TokenWithSpan]) -> Result<Duration> {
    let location = arg.first().map(loc).unwrap_or_default();
    let bad = || {
        SqlError::new("expected a duration", location)
            .with_hint("write INTERVAL '5' MINUTE, or the shorthand 500ms, 30s, 5m, 1h, 1d")
    };
    let parsed = match arg {
        [first, rest @ ..] if is_word(&first.token, "INTERVAL") => match rest {
            [TokenWithSpan {
                token: Token::SingleQuotedString(q),
                ..
            }] => parse_interval(q, None),
            [TokenWithSpan {
                token: Token::SingleQuotedString(q) | Token::Number(q, _),
                ..
            }, TokenWithSpan {
                token: Token::Word(unit),
                ..
            }] => parse_interval(q, Some(&unit.value)),
            _ => None,
        },
        // `5m` tokenizes as a number followed by a word (or as one word)
        [TokenWithSpan {
            token: Token::Number(n, _),
            ..
        }] => parse_shorthand(n),
        [TokenWithSpan {
            token: Token::Number(n, _),
            ..
        }, TokenWithSpan {
            token: Token::Word(unit),
            ..
        }] => parse_shorthand(&format!("{n}{}", unit.value))
            .or_else(|| parse_interval(n, Some(&unit.value))),
        [TokenWithSpan {
            token: Token::SingleQuotedString(s),
            ..
        }] => parse_shorthand(s),
        [TokenWithSpan {
            token: Token::Word(w),
            ..
        }] => parse_shorthand(&w.value),
        _ => None,
    };
    match parsed {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err(SqlError::new(
            "a window duration must be greater than zero",
            location,
        )),
        None => Err(bad()),
    }
}

/// The most windows one record may belong to (`size / advance` of a
/// sliding window): each is state and output, so more is a mistake.
pub const MAX_WINDOWS_PER_RECORD: u128 = 1000;

/// Checks what a window's operators rely on: whole milliseconds of at
/// least 1 ms (event time is in milliseconds), an advance no larger than
/// the size, and at most [`MAX_WINDOWS_PER_RECORD`] windows per record.
fn check_window(name: &str, kind: &WindowKind, location: Location) -> Result<()> {
    let durations: &[(&str, Duration)] = match kind {
        WindowKind::Tumbling { size } => &[("size", *size)],
        WindowKind::Session { gap } => &[("gap", *gap)],
        WindowKind::Sliding { size, advance } => &[("size", *size), ("advance", *advance)],
    };
    for (what, d) in durations {
        if d.as_millis() == 0 || d.subsec_nanos() % 1_000_000 != 0 {
            return Err(SqlError::new(
                format!(
                    "{name} {what} {:?} is not a whole number of milliseconds of at least 1 ms",
                    d
                ),
                location,
            )
            .with_hint("event time is in milliseconds: write 1ms, 500ms, 30s, 5m, ..."));
        }
    }
    if let WindowKind::Sliding { size, advance } = kind {
        if advance > size {
            return Err(SqlError::new(
                format!(
                    "{name} advance ({}) is larger than its size ({})",
                    format_duration(*advance),
                    format_duration(*size)
                ),
                location,
            )
            .with_hint(
                "the arguments are (size, advance); a hop larger than the window skips records",
            ));
        }
        let per_record = size.as_millis().div_ceil(advance.as_millis());
        if per_record > MAX_WINDOWS_PER_RECORD {
            return Err(SqlError::new(
                format!(
                    "{name}({}, {}) puts every record into {per_record} windows; at most {MAX_WINDOWS_PER_RECORD} are allowed",
                    format_duration(*size),
                    format_duration(*advance)
                ),
                location,
            )
            .with_hint(format!(
                "use an advance of at least {} (size / {MAX_WINDOWS_PER_RECORD}), or a TUMBLING window",
                format_duration(Duration::from_millis(size.as_millis().div_ceil(MAX_WINDOWS_PER_RECORD) as u64))
            )));
        }
    }
    Ok(())
}

/// True for the standard windowing table functions.
pub fn is_table_function(token: &Token) -> bool {
    ["TUMBLE", "HOP", "SESSION"]
        .iter()
        .any(|w| is_word(token, w))
}

/// Parses the standard table-function form; `tokens` starts at the function
/// name and ends after its closing parenthesis:
/// `TUMBLE(TABLE t, DESCRIPTOR(ts), size)`, `HOP(TABLE t, DESCRIPTOR(ts), slide, size)`,
/// `SESSION(TABLE t [PARTITION BY ...], DESCRIPTOR(ts), gap)`.
/// Returns the source table token and the window.
pub fn parse_table_function(tokens: &[TokenWithSpan]) -> Result<(TokenWithSpan, WindowSpec)> {
    let name_tok = &tokens[0];
    let name = match &name_tok.token {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        _ => unreachable!("caller checked is_table_function"),
    };
    let location = loc(name_tok);
    let usage = || {
        SqlError::new(
            format!("{name} takes (TABLE source, DESCRIPTOR(time_column), duration...)"),
            location,
        )
        .with_hint(
            "for example TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))",
        )
    };
    let args = split_args(&tokens[2..tokens.len() - 1]);
    let (table, descriptor, durations) = match args.as_slice() {
        [table, descriptor, rest @ ..] if !rest.is_empty() => (*table, *descriptor, rest),
        _ => return Err(usage()),
    };
    let table = match table {
        [kw, name, ..] if is_word(&kw.token, "TABLE") && matches!(name.token, Token::Word(_)) => {
            name.clone()
        }
        _ => return Err(usage()),
    };
    let time_column = match descriptor {
        [kw, open, col, close]
            if is_word(&kw.token, "DESCRIPTOR")
                && open.token == Token::LParen
                && close.token == Token::RParen =>
        {
            column_arg(std::slice::from_ref(col))?
        }
        _ => return Err(usage()),
    };
    let durations = durations
        .iter()
        .map(|a| duration_arg(a))
        .collect::<Result<Vec<_>>>()?;
    let kind = match (name.as_str(), durations.as_slice()) {
        ("TUMBLE", [size]) => WindowKind::Tumbling { size: *size },
        ("HOP", [slide, size]) => WindowKind::Sliding {
            size: *size,
            advance: *slide,
        },
        ("SESSION", [gap]) => WindowKind::Session { gap: *gap },
        _ => return Err(usage()),
    };
    check_window(&name, &kind, location)?;
    Ok((
        table,
        WindowSpec {
            kind,
            time_column: Some(time_column),
            processing_time: false,
            location,
        },
    ))
}
