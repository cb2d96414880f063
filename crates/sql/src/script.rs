//! Splits an application script into statements.
//!
//! The whole file is tokenized once with sqlparser's tokenizer, so every
//! token keeps its line and column in the original file; errors found later
//! (by us or by DataFusion) therefore point into the file the user wrote.
//! `-- @key: value` comments are collected as annotations of the statement
//! that follows them.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};

use crate::error::{Location, Result, SqlError};

/// The raw material of one statement: its significant tokens (no
/// whitespace or comments) and the annotations written above it.
#[derive(Debug, Clone)]
pub struct StatementTokens {
    pub tokens: Vec<TokenWithSpan>,
    pub annotations: Vec<(String, String)>,
    pub location: Location,
}

/// Tokenizes `text` and groups the tokens into statements separated by
/// top-level semicolons.
pub fn split_statements(text: &str) -> Result<Vec<StatementTokens>> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| {
            SqlError::new(e.message.clone(), Location::from_sqlparser(e.location))
                .with_hint("check for an unterminated string, quoted identifier or comment")
        })?;

    let mut statements = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    let mut annotations = Vec::new();
    let mut depth = 0i32;
    for token in tokens {
        match &token.token {
            Token::Whitespace(Whitespace::SingleLineComment { comment, .. }) => {
                if let Some(annotation) = parse_annotation(comment) {
                    if current.is_empty() {
                        annotations.push(annotation);
                    }
                }
            }
            Token::Whitespace(_) | Token::EOF => {}
            Token::SemiColon if depth == 0 => {
                flush(&mut statements, &mut current, &mut annotations);
            }
            t => {
                match t {
                    Token::LParen => depth += 1,
                    Token::RParen => depth -= 1,
                    _ => {}
                }
                current.push(token);
            }
        }
    }
    flush(&mut statements, &mut current, &mut annotations);
    Ok(statements)
}

fn flush(
    statements: &mut Vec<StatementTokens>,
    current: &mut Vec<TokenWithSpan>,
    annotations: &mut Vec<(String, String)>,
) {
    if current.is_empty() {
        return;
    }
    let tokens = std::mem::take(current);
    statements.push(StatementTokens {
        location: Location::from_sqlparser(tokens[0].span.start),
        tokens,
        annotations: std::mem::take(annotations),
    });
}

/// `-- @job_name: trades` → `("job_name", "trades")`.
fn parse_annotation(comment: &str) -> Option<(String, String)> {
    let body = comment.trim().strip_prefix('@')?;
    let (key, value) = body.split_once(':').unwrap_or((body, ""));
    let key = key.trim();
    (!key.is_empty()).then(|| (key.to_string(), value.trim().to_string()))
}

/// True when `token` is the (unquoted, case-insensitive) word `word`.
pub fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Index just past the parenthesis that closes the one at `open`.
pub fn matching_paren(tokens: &[TokenWithSpan], open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The token at `i`, or EOF past the end.
pub fn token_at(tokens: &[TokenWithSpan], i: usize) -> &Token {
    tokens.get(i).map(|t| &t.token).unwrap_or(&Token::EOF)
}

/// The error for an opening parenthesis that nothing closes.
pub fn unclosed(open: &TokenWithSpan) -> SqlError {
    SqlError::new("this parenthesis is never closed", loc(open))
}

/// Position of a token, as our [`Location`].
pub fn loc(token: &TokenWithSpan) -> Location {
    Location::from_sqlparser(token.span.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_keeps_annotations() {
        let text = "-- @name: first\n-- plain comment\nSELECT 1;\n\n-- @metric: m\nSELECT (2; 3);";
        let stmts = split_statements(text).unwrap();
        assert_eq!(stmts.len(), 2);
        assert_eq!(stmts[0].annotations, vec![("name".into(), "first".into())]);
        assert_eq!(stmts[0].location, Location::new(3, 1));
        assert_eq!(stmts[1].annotations, vec![("metric".into(), "m".into())]);
        // the semicolon inside parentheses does not split
        assert_eq!(stmts[1].tokens.len(), 6);
    }

    #[test]
    fn tokenizer_errors_are_positioned() {
        let err = split_statements("SELECT 'abc\nFROM t").unwrap_err();
        assert_eq!(err.location.line, 1);
    }
}
