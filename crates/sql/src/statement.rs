//! The Velostream dialect layer: recognises the statement header
//! (`CREATE STREAM|TABLE name AS`, source declarations, bare queries), lifts
//! the dialect clauses (`WINDOW`, `EMIT`, trailing `WITH (...)`) out of the
//! token stream, and hands the remaining standard SELECT to sqlparser.

use datafusion::sql::sqlparser::ast::{ColumnDef, Query, Statement as SqlStatement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan};

use crate::derived_tables;
use crate::error::{Location, Result, SqlError};
use crate::join_time::{self, JoinTimeClause};
pub use crate::plan::StatementKind;
use crate::properties::Properties;
use crate::relations::{referenced_relations, DEAD_LETTER};
use crate::script::{is_word, loc, matching_paren, token_at, unclosed, StatementTokens};
use crate::window_clause::{
    is_table_function, is_window_function, parse_table_function, parse_window, EmitMode, WindowSpec,
};

/// One statement of an application after the dialect layer.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    pub index: usize,
    pub kind: StatementKind,
    /// Target of `CREATE`, or the declared source.
    pub name: Option<String>,
    pub annotations: Vec<(String, String)>,
    pub properties: Properties,
    pub window: Option<WindowSpec>,
    /// The window came from a table function (`TABLE(TUMBLE(...))`), whose
    /// columns are named `window_start` / `window_end`.
    pub window_from_table_function: bool,
    pub emit: Option<EmitMode>,
    /// `WITHIN` and `FOR SYSTEM_TIME AS OF` clauses of the outer query's joins.
    pub join_times: Vec<JoinTimeClause>,
    /// Output columns marked `col PRIMARY KEY` in the SELECT list, or the
    /// key of a table declaration.
    pub primary_key: Vec<(String, Location)>,
    /// A source declared with `CREATE TABLE name (..., PRIMARY KEY (k))`:
    /// read as its latest row per key.
    pub declares_table: bool,
    pub query: Option<Box<Query>>,
    /// Columns of a source declaration.
    pub columns: Vec<ColumnDef>,
    pub location: Location,
    /// Position of the statement in the script (1 for the first), shared
    /// by the statements lifted out of it.
    pub ordinal: usize,
    /// Set on a statement lifted out of another one's FROM clause.
    pub derived: Option<DerivedFrom>,
}

/// Where a lifted statement came from: the subquery of `statement` that it
/// reads as `alias`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedFrom {
    pub statement: String,
    pub alias: Option<String>,
}

impl ParsedStatement {
    fn new(index: usize, ordinal: usize, location: Location) -> Self {
        Self {
            index,
            kind: StatementKind::Select,
            name: None,
            annotations: Vec::new(),
            properties: Properties::default(),
            window: None,
            window_from_table_function: false,
            emit: None,
            join_times: Vec::new(),
            primary_key: Vec::new(),
            declares_table: false,
            query: None,
            columns: Vec::new(),
            location,
            ordinal,
            derived: None,
        }
    }

    /// The name of the statement's job: its `-- @name` (or `@job_name`,
    /// `@job`) annotation, else the stream or table it creates, else
    /// `select_<n>` after its position in the script.
    pub fn job_name(&self) -> String {
        self.annotation("name")
            .or(self.annotation("job_name"))
            .or(self.annotation("job"))
            .map(str::to_string)
            .or_else(|| self.name.clone())
            .unwrap_or_else(|| format!("select_{}", self.ordinal))
    }

    /// The value of an `-- @key: value` annotation.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one statement's tokens: the statement written at position
/// `ordinal` of the script, planned as statement `index`. Derived tables
/// lifted out of its query come first, numbered from `index`; the
/// statement itself comes last.
pub fn parse_statement(
    index: usize,
    ordinal: usize,
    raw: StatementTokens,
) -> Result<Vec<ParsedStatement>> {
    let StatementTokens {
        tokens,
        annotations,
        location,
    } = raw;
    let mut stmt = ParsedStatement::new(index, ordinal, location);
    stmt.annotations = annotations;

    let mut pos = 0;
    if is_word(&tokens[0].token, "CREATE") {
        pos = 1;
        if is_word(token_at(&tokens, pos), "OR") && is_word(token_at(&tokens, pos + 1), "REPLACE") {
            pos += 2;
        }
        stmt.kind = if is_word(token_at(&tokens, pos), "STREAM") {
            StatementKind::CreateStream
        } else if is_word(token_at(&tokens, pos), "TABLE") {
            StatementKind::CreateTable
        } else {
            return Err(SqlError::new(
                "expected STREAM or TABLE after CREATE",
                tokens.get(pos).map(loc).unwrap_or(location),
            )
            .with_hint("Velostream creates streams and tables: CREATE STREAM name AS SELECT ..."));
        };
        pos += 1;
        stmt.name = Some(match tokens.get(pos).map(|t| &t.token) {
            Some(Token::Word(w)) => w.value.clone(),
            _ => {
                return Err(SqlError::new(
                    "expected a name after CREATE STREAM/TABLE",
                    tokens.get(pos).map(loc).unwrap_or(location),
                ))
            }
        });
        pos += 1;
        if matches!(token_at(&tokens, pos), Token::LParen) {
            return Ok(vec![parse_declaration(stmt, &tokens, pos)?]);
        }
        if is_word(token_at(&tokens, pos), "WITH")
            && matches!(token_at(&tokens, pos + 1), Token::LParen)
        {
            let end = matching_paren(&tokens, pos + 1).ok_or_else(|| unclosed(&tokens[pos + 1]))?;
            stmt.properties = Properties::parse(&tokens[pos + 2..end - 1])?;
            pos = end;
            if pos >= tokens.len() {
                // `CREATE STREAM s WITH (...)`: a source whose connector knows its columns
                stmt.kind = StatementKind::SourceDeclaration;
                return Ok(vec![stmt]);
            }
        }
        if !is_word(token_at(&tokens, pos), "AS") {
            return Err(SqlError::new(
                "expected AS SELECT ... or a column list after the stream name",
                tokens.get(pos).map(loc).unwrap_or(location),
            )
            .with_hint("CREATE STREAM out AS SELECT ... FROM source, or CREATE STREAM source (col TYPE, ...) WITH (...)"));
        }
        pos += 1;
    }

    let job = stmt.job_name();
    let (query_tokens, lifted) = derived_tables::lift(&job, &tokens[pos..])?;
    parse_query(&mut stmt, &query_tokens)?;
    let mut statements = Vec::with_capacity(lifted.len() + 1);
    for d in lifted {
        let mut derived = ParsedStatement::new(index + statements.len(), ordinal, d.location);
        derived.kind = d.kind;
        derived.name = Some(d.name);
        derived.derived = Some(DerivedFrom {
            statement: job.clone(),
            alias: d.alias,
        });
        parse_query(&mut derived, &d.tokens)?;
        if d.kind == StatementKind::CreateTable {
            if let Some(query) = derived.query.as_deref_mut() {
                derived_tables::expose_group_keys(query);
            }
        }
        statements.push(derived);
    }
    if !statements.is_empty() {
        inherit_properties(&stmt, &mut statements);
    }
    stmt.index = index + statements.len();
    statements.push(stmt);
    Ok(statements)
}

/// Parses a query's tokens into `stmt`: its dialect clauses lifted, the
/// rest parsed by sqlparser.
fn parse_query(stmt: &mut ParsedStatement, tokens: &[TokenWithSpan]) -> Result<()> {
    let query_tokens = lift_dialect_clauses(stmt, tokens)?;
    if query_tokens.is_empty() {
        return Err(SqlError::new("expected a SELECT query", stmt.location));
    }
    let end = query_tokens
        .last()
        .map(|t| Location::from_sqlparser(t.span.end))
        .unwrap_or(stmt.location);
    let mut parser = Parser::new(&GenericDialect {}).with_tokens_with_locations(query_tokens);
    let query = parser.parse_query().map_err(|e| parser_error(e, end))?;
    if parser.peek_token().token != Token::EOF {
        let next = parser.peek_token();
        return Err(SqlError::new(
            format!("unexpected `{}` after the end of the query", next.token),
            loc(&next),
        )
        .with_hint("clause order: SELECT .. FROM .. WHERE .. GROUP BY .. WINDOW .. HAVING .. ORDER BY .. LIMIT .. EMIT .. WITH (..)"));
    }
    stmt.query = Some(query);
    Ok(())
}

/// The statements lifted out of `outer` read their sources with the
/// settings written on `outer` (`WITH ('bids.type' = ...)` and its error
/// policy); `outer`'s own sink and dead-letter settings stay with it.
fn inherit_properties(outer: &ParsedStatement, lifted: &mut [ParsedStatement]) {
    let relations = |s: &ParsedStatement| -> Vec<String> {
        s.query
            .as_deref()
            .map(referenced_relations)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    };
    let mut all: Vec<String> = relations(outer);
    for s in lifted.iter() {
        all.extend(relations(s));
        all.extend(s.name.clone());
    }
    all.extend(outer.name.clone());
    all.push(DEAD_LETTER.to_string());
    all.push(crate::error_policy::ERROR.to_string());
    for s in lifted {
        let mut keep = relations(s);
        keep.push(crate::error_policy::ERROR.to_string());
        s.properties = outer.properties.inherited(&all, &keep);
    }
}

/// Removes `WINDOW <spec>`, `EMIT CHANGES|FINAL` and `WITH (...)` found at
/// the top level of the query, storing them on `stmt`; returns the rest.
fn lift_dialect_clauses(
    stmt: &mut ParsedStatement,
    tokens: &[TokenWithSpan],
) -> Result<Vec<TokenWithSpan>> {
    let mut rest = Vec::with_capacity(tokens.len());
    let mut depth = 0i32;
    let mut open_parens: Vec<usize> = Vec::new();
    let mut joins = 0;
    // Frames to insert before a closing parenthesis, by its index.
    let mut frames: Vec<(usize, Vec<TokenWithSpan>)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        if let Some(frame) = row_buffer_frame(tokens, i)? {
            let open = *open_parens.last().ok_or_else(|| {
                SqlError::new("ROWS WINDOW BUFFER belongs inside OVER (...)", loc(t))
            })?;
            let close = matching_paren(tokens, open).ok_or_else(|| unclosed(&tokens[open]))?;
            frames.push((close - 1, frame));
            i += 5;
            continue;
        }
        if let Some(pos) = frames.iter().position(|(close, _)| *close == i) {
            rest.extend(frames.remove(pos).1);
        }
        if is_word(&t.token, "TABLE")
            && matches!(token_at(tokens, i + 1), Token::LParen)
            && is_table_function(token_at(tokens, i + 2))
            && matches!(token_at(tokens, i + 3), Token::LParen)
        {
            let end = matching_paren(tokens, i + 1).ok_or_else(|| unclosed(&tokens[i + 1]))?;
            let inner_end =
                matching_paren(tokens, i + 3).ok_or_else(|| unclosed(&tokens[i + 3]))?;
            if stmt.window.is_some() {
                return Err(SqlError::new("a query has at most one window", loc(t)));
            }
            let (table, window) = parse_table_function(&tokens[i + 2..inner_end])?;
            stmt.window = Some(window);
            stmt.window_from_table_function = true;
            rest.push(table);
            i = end;
            continue;
        }
        if depth == 0 && i > 0 {
            if is_word(&t.token, "JOIN") {
                joins += 1;
            }
            if let Some((clause, next)) = join_time::lift(tokens, i, joins)? {
                stmt.join_times.push(clause);
                i = next;
                continue;
            }
            if is_word(&t.token, "WINDOW") && is_window_function(token_at(tokens, i + 1)) {
                if !matches!(token_at(tokens, i + 2), Token::LParen) {
                    return Err(SqlError::new(
                        "expected `(` after the window type",
                        loc(&tokens[i + 1]),
                    ));
                }
                let end = matching_paren(tokens, i + 2).ok_or_else(|| unclosed(&tokens[i + 2]))?;
                if stmt.window.is_some() {
                    return Err(SqlError::new(
                        "a query has at most one WINDOW clause",
                        loc(t),
                    ));
                }
                stmt.window = Some(parse_window(&tokens[i + 1..end])?);
                i = end;
                continue;
            }
            if is_word(&t.token, "PRIMARY") && is_word(token_at(tokens, i + 1), "KEY") {
                match rest.last().map(|p: &TokenWithSpan| &p.token) {
                    Some(Token::Word(w))
                        if !["SELECT", "DISTINCT"].iter().any(|k| {
                            w.quote_style.is_none() && w.value.eq_ignore_ascii_case(k)
                        }) =>
                    {
                        stmt.primary_key.push((w.value.clone(), loc(t)))
                    }
                    _ => {
                        return Err(SqlError::new(
                            "PRIMARY KEY follows a column name or alias",
                            loc(t),
                        )
                        .with_hint("write SELECT symbol PRIMARY KEY, COUNT(*) ..."))
                    }
                }
                i += 2;
                continue;
            }
            if is_word(&t.token, "EMIT") {
                stmt.emit = Some(if is_word(token_at(tokens, i + 1), "CHANGES") {
                    EmitMode::Changes
                } else if is_word(token_at(tokens, i + 1), "FINAL") {
                    EmitMode::Final
                } else {
                    return Err(SqlError::new("expected CHANGES or FINAL after EMIT", tokens.get(i + 1).map(loc).unwrap_or(loc(t)))
                        .with_hint("EMIT CHANGES emits every update; EMIT FINAL one row per group when it is complete"));
                });
                i += 2;
                continue;
            }
            if is_word(&t.token, "WITH") && matches!(token_at(tokens, i + 1), Token::LParen) {
                let end = matching_paren(tokens, i + 1).ok_or_else(|| unclosed(&tokens[i + 1]))?;
                let props = Properties::parse(&tokens[i + 2..end - 1])?;
                stmt.properties.extend(&props);
                i = end;
                continue;
            }
        }
        match t.token {
            Token::LParen => {
                depth += 1;
                open_parens.push(i);
            }
            Token::RParen => {
                depth -= 1;
                open_parens.pop();
            }
            _ => {}
        }
        rest.push(t.clone());
        i += 1;
    }
    Ok(rest)
}

/// The Velostream form `OVER (ROWS WINDOW BUFFER n ROWS ...)`: keep the last
/// n rows of each partition. Returns the standard frame that replaces it,
/// `ROWS BETWEEN n-1 PRECEDING AND CURRENT ROW`, when `tokens[i..]` starts
/// with the clause.
fn row_buffer_frame(tokens: &[TokenWithSpan], i: usize) -> Result<Option<Vec<TokenWithSpan>>> {
    if !(is_word(token_at(tokens, i), "ROWS")
        && is_word(token_at(tokens, i + 1), "WINDOW")
        && is_word(token_at(tokens, i + 2), "BUFFER"))
    {
        return Ok(None);
    }
    let n = match token_at(tokens, i + 3) {
        Token::Number(n, _) => n.parse::<u64>().ok().filter(|n| *n > 0),
        _ => None,
    };
    let (Some(n), true) = (n, is_word(token_at(tokens, i + 4), "ROWS")) else {
        return Err(SqlError::new(
            "expected ROWS WINDOW BUFFER <n> ROWS with n > 0",
            loc(&tokens[i + 2]),
        ));
    };
    let span = tokens[i].span;
    let word = |w: &str| TokenWithSpan::new(Token::make_keyword(w), span);
    Ok(Some(vec![
        word("ROWS"),
        word("BETWEEN"),
        TokenWithSpan::new(Token::Number((n - 1).to_string(), false), span),
        word("PRECEDING"),
        word("AND"),
        word("CURRENT"),
        word("ROW"),
    ]))
}

/// `CREATE STREAM name (col TYPE, ...) [WITH (...)]`: column definitions are
/// parsed by sqlparser as those of a `CREATE TABLE`.
fn parse_declaration(
    mut stmt: ParsedStatement,
    tokens: &[TokenWithSpan],
    open: usize,
) -> Result<ParsedStatement> {
    let end = matching_paren(tokens, open).ok_or_else(|| unclosed(&tokens[open]))?;
    let mut ddl: Vec<TokenWithSpan> = vec![
        synthetic("CREATE"),
        synthetic("TABLE"),
        tokens[open - 1].clone(),
    ];
    ddl.extend_from_slice(&tokens[open..end]);
    let mut parser = Parser::new(&GenericDialect {}).with_tokens_with_locations(ddl);
    let last = Location::from_sqlparser(tokens[end - 1].span.end);
    match parser
        .parse_statement()
        .map_err(|e| parser_error(e, last))?
    {
        SqlStatement::CreateTable(ct) => {
            stmt.primary_key = declared_key(&ct, stmt.location)?;
            stmt.columns = ct.columns;
        }
        _ => unreachable!("tokens start with CREATE TABLE"),
    }
    let mut pos = end;
    if is_word(token_at(tokens, pos), "WITH") && matches!(token_at(tokens, pos + 1), Token::LParen)
    {
        let close = matching_paren(tokens, pos + 1).ok_or_else(|| unclosed(&tokens[pos + 1]))?;
        stmt.properties = Properties::parse(&tokens[pos + 2..close - 1])?;
        pos = close;
    }
    if let Some(extra) = tokens.get(pos) {
        return Err(SqlError::new(
            format!("unexpected `{}` after the source declaration", extra.token),
            loc(extra),
        ));
    }
    match (stmt.kind, stmt.primary_key.is_empty()) {
        (StatementKind::CreateTable, true) => {
            return Err(SqlError::new(
                "a table declaration needs a PRIMARY KEY: its rows are the latest per key",
                stmt.location,
            )
            .with_hint("CREATE TABLE users (id BIGINT, name VARCHAR, PRIMARY KEY (id)) WITH (...), or CREATE STREAM for a source read record by record"))
        }
        (StatementKind::CreateStream, false) => {
            return Err(SqlError::new(
                "a stream has no PRIMARY KEY: its records are not replaced by key",
                stmt.primary_key[0].1,
            )
            .with_hint("declare it with CREATE TABLE to read the latest row per key"))
        }
        _ => {}
    }
    stmt.declares_table = stmt.kind == StatementKind::CreateTable;
    stmt.kind = StatementKind::SourceDeclaration;
    Ok(stmt)
}

/// The key of a declaration: `PRIMARY KEY (a, b)` after the columns or
/// `col TYPE PRIMARY KEY` on one of them (not both).
fn declared_key(
    ct: &datafusion::sql::sqlparser::ast::CreateTable,
    at: Location,
) -> Result<Vec<(String, Location)>> {
    use datafusion::sql::sqlparser::ast::{ColumnOption, Expr as SqlExpr, TableConstraint};
    let mut key = Vec::new();
    for c in &ct.constraints {
        if let TableConstraint::PrimaryKey(pk) = c {
            for col in &pk.columns {
                match &col.column.expr {
                    SqlExpr::Identifier(i) => {
                        key.push((i.value.clone(), Location::from_sqlparser(i.span.start)))
                    }
                    other => {
                        return Err(SqlError::new(
                            format!("PRIMARY KEY lists columns, not `{other}`"),
                            at,
                        ))
                    }
                }
            }
        }
    }
    for column in &ct.columns {
        if column
            .options
            .iter()
            .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
        {
            if !key.is_empty() {
                return Err(SqlError::new(
                    "the key is declared twice: PRIMARY KEY on a column and PRIMARY KEY (...)",
                    Location::from_sqlparser(column.name.span.start),
                ));
            }
            key.push((
                column.name.value.clone(),
                Location::from_sqlparser(column.name.span.start),
            ));
        }
    }
    for (name, location) in &key {
        if !ct
            .columns
            .iter()
            .any(|c| c.name.value.eq_ignore_ascii_case(name))
        {
            return Err(SqlError::new(
                format!("PRIMARY KEY column '{name}' is not a declared column"),
                *location,
            ));
        }
    }
    Ok(key)
}

fn synthetic(word: &str) -> TokenWithSpan {
    TokenWithSpan::new(Token::make_keyword(word), Span::empty())
}

/// sqlparser reports `... at Line: L, Column: C`; turn that into a position.
/// An error at the end of input has no position: `end` (just past the
/// statement's last token) is used.
pub(crate) fn parser_error(e: ParserError, end: Location) -> SqlError {
    let text = match &e {
        ParserError::ParserError(s) | ParserError::TokenizerError(s) => s.clone(),
        ParserError::RecursionLimitExceeded => "the query nests too deeply".to_string(),
    };
    let (message, location) = match text.rfind(" at Line: ") {
        Some(at) => {
            let pos = &text[at + " at Line: ".len()..];
            let mut nums = pos
                .split(", Column: ")
                .map(|n| n.trim().parse::<u64>().unwrap_or(0));
            let line = nums.next().unwrap_or(0);
            let column = nums.next().unwrap_or(0);
            (text[..at].to_string(), Location::new(line, column))
        }
        None => (text, Location::default()),
    };
    let location = if location.is_known() { location } else { end };
    let hint = if message.contains("found: EOF") {
        "the statement ends too early; is a clause or a closing parenthesis missing?"
    } else if message.contains("a list of columns in parentheses") {
        // `key VARCHAR` in a column list reads as a KEY (...) constraint
        "a column named after a keyword (key, index, primary, ...) is declared quoted: \"key\" VARCHAR"
    } else {
        "clause order: SELECT .. FROM .. WHERE .. GROUP BY .. WINDOW .. HAVING .. ORDER BY .. LIMIT .. EMIT .. WITH (..)"
    };
    SqlError::new(format!("syntax error: {message}"), location).with_hint(hint)
}
