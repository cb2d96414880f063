//! `WITH ('key' = 'value', ...)` properties of a statement.
//!
//! Keys are either prefixed with a source or sink name (`'trades.path'`) and
//! apply to that relation only, or unprefixed and apply to every source of
//! the statement.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{Location, Result, SqlError};
use crate::script::loc;

/// One `'key' = 'value'` pair and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub key: String,
    pub value: String,
    pub location: Location,
}

/// The properties of one statement, in the order written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    pub entries: Vec<Property>,
}

impl Properties {
    /// Parses the tokens between the parentheses of `WITH ( ... )`.
    pub fn parse(tokens: &[TokenWithSpan]) -> Result<Self> {
        let mut entries = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let key_tok = &tokens[i];
            let key = match &key_tok.token {
                Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
                Token::Word(w) => w.value.clone(),
                other => {
                    return Err(SqlError::new(
                        format!("expected a property key in WITH (...), found `{other}`"),
                        loc(key_tok),
                    )
                    .with_hint("write properties as 'key' = 'value', separated by commas"))
                }
            };
            if !matches!(tokens.get(i + 1).map(|t| &t.token), Some(Token::Eq)) {
                return Err(SqlError::new(
                    format!("expected `=` after property key '{key}'"),
                    tokens.get(i + 1).map(loc).unwrap_or(loc(key_tok)),
                )
                .with_hint("write properties as 'key' = 'value'"));
            }
            let value_tok = tokens.get(i + 2).ok_or_else(|| {
                SqlError::new(format!("property '{key}' has no value"), loc(key_tok))
            })?;
            let value = match &value_tok.token {
                Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
                Token::Number(n, _) => n.clone(),
                Token::Word(w) => w.value.clone(),
                other => {
                    return Err(SqlError::new(
                        format!("unexpected `{other}` as the value of property '{key}'"),
                        loc(value_tok),
                    )
                    .with_hint("quote property values: 'key' = 'value'"))
                }
            };
            entries.push(Property {
                key,
                value,
                location: loc(key_tok),
            });
            i += 3;
            match tokens.get(i).map(|t| &t.token) {
                None => break,
                Some(Token::Comma) => i += 1,
                Some(other) => {
                    return Err(SqlError::new(
                        format!("expected `,` or `)` in WITH (...), found `{other}`"),
                        loc(&tokens[i]),
                    ))
                }
            }
        }
        Ok(Self { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds all entries of `other` after ours (later entries win).
    pub fn extend(&mut self, other: &Properties) {
        self.entries.extend(other.entries.iter().cloned());
    }

    /// Value of an exact key (the last one written wins).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    /// The properties addressed to relation `name`: its prefixed keys with
    /// the prefix removed, over the unprefixed keys when `include_unprefixed`.
    /// `relations` lists every relation name of the statement, to tell a
    /// prefix from a dotted unprefixed key such as `event.time.field`.
    pub fn scoped(
        &self,
        name: &str,
        relations: &[String],
        include_unprefixed: bool,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if include_unprefixed {
            for p in &self.entries {
                if prefix_of(&p.key, relations).is_none() {
                    out.insert(p.key.clone(), p.value.clone());
                }
            }
        }
        for p in &self.entries {
            if let Some((prefix, rest)) = prefix_of(&p.key, relations) {
                if prefix.eq_ignore_ascii_case(name) {
                    out.insert(rest.to_string(), p.value.clone());
                }
            }
        }
        out
    }

    /// The entries a statement reading only `keep` inherits from one that
    /// names every relation in `all`: the unprefixed ones and those
    /// addressed to a relation of `keep`; keys addressed to the other
    /// relations of `all` stay behind.
    pub fn inherited(&self, all: &[String], keep: &[String]) -> Properties {
        let entries = self
            .entries
            .iter()
            .filter(|p| match prefix_of(&p.key, all) {
                None => true,
                Some((prefix, _)) => keep.iter().any(|k| k.eq_ignore_ascii_case(prefix)),
            })
            .cloned()
            .collect();
        Properties { entries }
    }

    /// Where a key (exact or prefixed by any relation) was written.
    pub fn location_of(&self, key: &str) -> Option<Location> {
        self.entries
            .iter()
            .find(|p| p.key == key || p.key.ends_with(&format!(".{key}")))
            .map(|p| p.location)
    }
}

fn prefix_of<'a>(key: &'a str, relations: &[String]) -> Option<(&'a str, &'a str)> {
    let (prefix, rest) = key.split_once('.')?;
    relations
        .iter()
        .any(|r| r.eq_ignore_ascii_case(prefix))
        .then_some((prefix, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn props(text: &str) -> Result<Properties> {
        let tokens: Vec<_> = Tokenizer::new(&GenericDialect {}, text)
            .tokenize_with_location()
            .unwrap()
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        Properties::parse(&tokens)
    }

    #[test]
    fn scoping_by_prefix() {
        let p = props("'trades.path' = 'a.jsonl', 'event.time.field' = 'ts', 'out.type' = 'file_sink', 'batch' = 10").unwrap();
        let rels = vec!["trades".to_string(), "out".to_string()];
        let trades = p.scoped("trades", &rels, true);
        assert_eq!(trades.get("path").map(String::as_str), Some("a.jsonl"));
        assert_eq!(
            trades.get("event.time.field").map(String::as_str),
            Some("ts")
        );
        assert_eq!(trades.get("batch").map(String::as_str), Some("10"));
        assert!(!trades.contains_key("type"));
        let out = p.scoped("out", &rels, false);
        assert_eq!(out.len(), 1);
        assert_eq!(out.get("type").map(String::as_str), Some("file_sink"));
    }

    #[test]
    fn malformed_properties_are_positioned() {
        let err = props("'a' = 'b' 'c' = 'd'").unwrap_err();
        assert!(err.message.contains("expected `,`"), "{}", err.message);
        assert_eq!(err.location.column, 11);
        assert!(props("'a' 'b'").is_err());
    }
}
