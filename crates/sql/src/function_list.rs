//! The function library as users see it: every scalar, aggregate and
//! window function a statement can call, with its signatures and
//! documentation, read from the same session the planner uses. `velostream
//! functions` prints it and docs/functions.md is generated from it, so the
//! list cannot drift from what the planner accepts.

use std::fmt::Write as _;

use datafusion::logical_expr::{Documentation, Signature, TypeSignature};

use crate::catalog::streaming_session_state;

/// What kind of call a function is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FunctionKind {
    Scalar,
    Aggregate,
    Window,
}

impl FunctionKind {
    fn label(self) -> &'static str {
        match self {
            FunctionKind::Scalar => "scalar",
            FunctionKind::Aggregate => "aggregate",
            FunctionKind::Window => "window",
        }
    }
}

/// One function of the library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionEntry {
    pub name: String,
    pub kind: FunctionKind,
    /// Other names it answers to.
    pub aliases: Vec<String>,
    /// The argument types it accepts, one line per form.
    pub signatures: Vec<String>,
    /// How a call is written (`abs(numeric_expression)`).
    pub syntax: Option<String>,
    pub description: Option<String>,
    /// The group it is listed under ("Math Functions").
    pub section: String,
}

/// Functions of the dialect that are not session functions: rewritten
/// before planning or lifted out of FROM.
const DIALECT_FUNCTIONS: &[(&str, &str, &str)] = &[
    (
        "mod",
        "mod(dividend, divisor)",
        "The remainder of dividend / divisor, exactly as the % operator (rewritten to it before planning).",
    ),
    (
        "tumble",
        "FROM TABLE(TUMBLE(TABLE source, DESCRIPTOR(time_column), size))",
        "Windowing table function: each row with window_start and window_end of its tumbling window.",
    ),
    (
        "hop",
        "FROM TABLE(HOP(TABLE source, DESCRIPTOR(time_column), slide, size))",
        "Windowing table function: each row once per sliding (hopping) window that holds it.",
    ),
    (
        "session",
        "FROM TABLE(SESSION(TABLE source [PARTITION BY key], DESCRIPTOR(time_column), gap))",
        "Windowing table function: rows grouped into sessions that close after a gap of inactivity.",
    ),
];

/// Session functions that are the planner's own markers, not for users.
fn is_internal(name: &str) -> bool {
    name.starts_with("velostream_")
}

/// Every function a statement can call, by section and name.
pub fn function_library() -> Vec<FunctionEntry> {
    let state = streaming_session_state();
    let mut entries = Vec::new();
    for (key, f) in state.scalar_functions() {
        if key == f.name() && !is_internal(key) {
            entries.push(entry(
                f.name(),
                FunctionKind::Scalar,
                f.aliases(),
                f.signature(),
                f.documentation(),
            ));
        }
    }
    for (key, f) in state.aggregate_functions() {
        if key == f.name() {
            entries.push(entry(
                f.name(),
                FunctionKind::Aggregate,
                f.aliases(),
                f.signature(),
                f.documentation(),
            ));
        }
    }
    for (key, f) in state.window_functions() {
        if key == f.name() {
            entries.push(entry(
                f.name(),
                FunctionKind::Window,
                f.aliases(),
                f.signature(),
                f.documentation(),
            ));
        }
    }
    for (name, syntax, description) in DIALECT_FUNCTIONS {
        entries.push(FunctionEntry {
            name: name.to_string(),
            kind: FunctionKind::Scalar,
            aliases: Vec::new(),
            signatures: Vec::new(),
            syntax: Some(syntax.to_string()),
            description: Some(description.to_string()),
            section: "Velostream Dialect".to_string(),
        });
    }
    entries.sort_by(|a, b| (&a.section, &a.name, a.kind).cmp(&(&b.section, &b.name, b.kind)));
    entries
}

fn entry(
    name: &str,
    kind: FunctionKind,
    aliases: &[String],
    signature: &Signature,
    doc: Option<&Documentation>,
) -> FunctionEntry {
    let mut aliases: Vec<String> = aliases.iter().filter(|a| *a != name).cloned().collect();
    aliases.sort();
    aliases.dedup();
    let section = doc
        .map(|d| d.doc_section.label.to_string())
        .unwrap_or_else(|| match kind {
            FunctionKind::Scalar => "Other Functions".to_string(),
            FunctionKind::Aggregate => "Aggregate Functions".to_string(),
            FunctionKind::Window => "Window Functions".to_string(),
        });
    FunctionEntry {
        name: name.to_string(),
        kind,
        aliases,
        signatures: signatures(&signature.type_signature),
        syntax: doc.map(|d| d.syntax_example.clone()),
        description: doc.map(|d| first_paragraph(&d.description)),
        section,
    }
}

/// The accepted argument types, one line per form; forms that the function
/// checks itself say so.
fn signatures(signature: &TypeSignature) -> Vec<String> {
    signature
        .to_string_repr()
        .into_iter()
        .map(|s| match s.as_str() {
            "UserDefined" => "types checked by the function".to_string(),
            "NullAry()" => "no arguments".to_string(),
            _ => s,
        })
        .collect()
}

fn first_paragraph(text: &str) -> String {
    text.split("\n\n")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The library as text, one function per block (`velostream functions`).
pub fn render_text(entries: &[FunctionEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        let _ = write!(out, "{} ({})", e.name, e.kind.label());
        if !e.aliases.is_empty() {
            let _ = write!(out, "  aliases: {}", e.aliases.join(", "));
        }
        out.push('\n');
        if let Some(syntax) = &e.syntax {
            let _ = writeln!(out, "  {syntax}");
        }
        for s in &e.signatures {
            let _ = writeln!(out, "  ({s})");
        }
        if let Some(d) = &e.description {
            let _ = writeln!(out, "  {d}");
        }
    }
    out
}

/// The library as the Markdown page docs/functions.md.
pub fn render_markdown(entries: &[FunctionEntry]) -> String {
    let mut out = String::from(
        "# Functions\n\n\
         Generated by `velostream functions --markdown > docs/functions.md`; do not edit by hand.\n\n\
         Every function a Velostream statement can call, from the planner's own function library.\n\
         Argument types are Arrow types; a statement's own types are described in the dialect reference.\n\
         A function that fails for one row (an invalid argument, an overflow) sends that row to the\n\
         statement's error policy; the other rows go on.\n",
    );
    let mut section = "";
    for e in entries {
        if e.section != section {
            section = &e.section;
            let _ = write!(out, "\n## {section}\n\n| function | kind | call | argument types | description |\n|---|---|---|---|---|\n");
        }
        let name = if e.aliases.is_empty() {
            format!("`{}`", e.name)
        } else {
            format!(
                "`{}` (also {})",
                e.name,
                e.aliases
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            name,
            e.kind.label(),
            e.syntax
                .as_deref()
                .map(|s| format!("`{}`", cell(s)))
                .unwrap_or_default(),
            cell(&e.signatures.join("; ")),
            cell(e.description.as_deref().unwrap_or_default()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_the_session_functions_once_with_their_aliases() {
        let entries = function_library();
        let find = |n: &str| entries.iter().filter(|e| e.name == n).collect::<Vec<_>>();
        assert_eq!(find("abs").len(), 1);
        assert_eq!(find("sum")[0].kind, FunctionKind::Aggregate);
        assert_eq!(find("row_number")[0].kind, FunctionKind::Window);
        assert!(find("regexp_extract")[0].syntax.is_some());
        assert!(find("mod")[0].section.contains("Dialect"));
        // an alias is listed on its function, not as one of its own
        assert!(find("var")[0].aliases.contains(&"variance".to_string()));
        assert!(find("variance").is_empty());
        assert!(find("upper")[0].aliases.contains(&"ucase".to_string()));
        assert!(entries.iter().all(|e| !e.name.starts_with("velostream_")));
    }

    /// docs/functions.md is what `velostream functions --markdown` prints.
    #[test]
    fn the_function_reference_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/functions.md");
        let written = std::fs::read_to_string(&path).unwrap_or_default();
        let rendered = render_markdown(&function_library());
        let first_difference = written
            .lines()
            .zip(rendered.lines())
            .position(|(w, r)| w != r)
            .map(|i| (i + 1, written.lines().nth(i), rendered.lines().nth(i)));
        assert!(
            written == rendered,
            "docs/functions.md is stale: regenerate it with `velostream functions --markdown > docs/functions.md` \
             ({} lines written, {} rendered; first difference (line, written, rendered): {first_difference:?})",
            written.lines().count(),
            rendered.lines().count()
        );
    }
}
