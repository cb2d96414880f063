//! Derived tables: a subquery in FROM or JOIN that aggregates or windows
//! becomes a statement of its own, planned before the statement that reads
//! it, exactly as if the user had written `CREATE STREAM|TABLE <name> AS
//! <subquery>` and read `<name>`. That is how a standard single-statement
//! query (Nexmark q5: sliding counts joined with the per-window maximum of
//! the same counts) runs on pipelines that each hold one aggregation.
//!
//! A subquery that only filters or projects stays inline: DataFusion plans
//! it as part of the query that contains it.
//!
//! The lifted statement is named `<statement>_<alias>` (lower case; a
//! counter when the subquery has no alias or the name is taken). A
//! windowed subquery is a stream of final window results; a non-windowed
//! aggregation is a table (its rows update), as the user would have
//! declared it.

use std::collections::HashSet;
use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::{Expr, GroupByExpr, Ident, Query, SelectItem, SetExpr};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{Location, Result, SqlError};
use crate::plan::StatementKind;
use crate::script::{is_word, loc, matching_paren, token_at, unclosed};
use crate::window_clause::{is_table_function, is_window_function};

/// One subquery lifted into a statement of its own.
#[derive(Debug, Clone)]
pub(crate) struct DerivedQuery {
    pub name: String,
    /// The alias the enclosing query reads it by (`AuctionBids`), if any.
    pub alias: Option<String>,
    pub kind: StatementKind,
    /// The subquery's tokens, its own derived tables already replaced.
    pub tokens: Vec<TokenWithSpan>,
    pub location: Location,
}

/// Lifts the derived tables of `tokens` (a query; nested subqueries too),
/// returning the query with each lifted subquery replaced by its name and
/// the lifted queries in the order they must be planned (inner first).
pub(crate) fn lift(
    statement: &str,
    tokens: &[TokenWithSpan],
) -> Result<(Vec<TokenWithSpan>, Vec<DerivedQuery>)> {
    let mut lifter = Lifter {
        prefix: statement.to_lowercase(),
        used: HashSet::new(),
        lifted: Vec::new(),
        renames: Vec::new(),
    };
    let rest = lifter.level(tokens)?;
    Ok((rest, lifter.lifted))
}

struct Lifter {
    prefix: String,
    used: HashSet<String>,
    lifted: Vec<DerivedQuery>,
    /// Common table expressions lifted so far: (name, lifted name).
    renames: Vec<(String, String)>,
}

impl Lifter {
    /// One query level: copies its tokens, lifting the derived tables found
    /// in its FROM clause.
    fn level(&mut self, tokens: &[TokenWithSpan]) -> Result<Vec<TokenWithSpan>> {
        let mut out = Vec::with_capacity(tokens.len());
        let mut i = self.common_table_expressions(tokens, &mut out)?;
        let mut depth = 0usize;
        let mut in_from = false;
        while i < tokens.len() {
            let t = &tokens[i];
            if let Some(lifted) = self.renamed_relation(tokens, i) {
                out.push(word(lifted, t.span));
                if alias_after(tokens, i + 1).is_none() {
                    out.push(TokenWithSpan::new(Token::make_keyword("AS"), t.span));
                    out.push(t.clone());
                }
                i += 1;
                continue;
            }
            if depth == 0 {
                if is_word(&t.token, "FROM") {
                    in_from = true;
                } else if ENDS_FROM.iter().any(|w| is_word(&t.token, w)) {
                    in_from = false;
                }
            }
            let starts_derived = depth == 0
                && in_from
                && matches!(t.token, Token::LParen)
                && is_word(token_at(tokens, i + 1), "SELECT")
                && i > 0
                && (is_word(&tokens[i - 1].token, "FROM")
                    || is_word(&tokens[i - 1].token, "JOIN")
                    || matches!(tokens[i - 1].token, Token::Comma));
            if starts_derived {
                let close = matching_paren(tokens, i).ok_or_else(|| unclosed(t))?;
                let inner = self.level(&tokens[i + 1..close - 1])?;
                match own_statement_kind(&inner) {
                    Some(kind) => {
                        let alias = alias_after(tokens, close);
                        let name = self.name_for(alias.as_deref());
                        self.lifted.push(DerivedQuery {
                            name: name.clone(),
                            alias,
                            kind,
                            location: loc(&tokens[i + 1]),
                            tokens: inner,
                        });
                        out.push(word(name, t.span));
                    }
                    None => {
                        out.push(t.clone());
                        out.extend(inner);
                        out.push(tokens[close - 1].clone());
                    }
                }
                i = close;
                continue;
            }
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => depth = depth.saturating_sub(1),
                _ => {}
            }
            out.push(t.clone());
            i += 1;
        }
        Ok(out)
    }

    /// A leading `WITH name AS (query), ...`: each query that needs a
    /// pipeline of its own is lifted like a derived table, and the query
    /// reads it by the lifted name under the CTE's name; the others stay in
    /// the WITH clause (copied to `out`). Returns where the body starts.
    fn common_table_expressions(
        &mut self,
        tokens: &[TokenWithSpan],
        out: &mut Vec<TokenWithSpan>,
    ) -> Result<usize> {
        if !is_word(token_at(tokens, 0), "WITH") || matches!(token_at(tokens, 1), Token::LParen) {
            return Ok(0);
        }
        let mut kept: Vec<TokenWithSpan> = Vec::new();
        let mut i = 1;
        loop {
            let (Token::Word(name), true, Token::LParen) = (
                token_at(tokens, i),
                is_word(token_at(tokens, i + 1), "AS"),
                token_at(tokens, i + 2),
            ) else {
                return Err(SqlError::new(
                    "expected `name AS (SELECT ...)` in WITH",
                    tokens.get(i).map(loc).unwrap_or_default(),
                ));
            };
            let open = i + 2;
            let close = matching_paren(tokens, open).ok_or_else(|| unclosed(&tokens[open]))?;
            let inner = self.level(&tokens[open + 1..close - 1])?;
            match own_statement_kind(&inner) {
                Some(kind) => {
                    let lifted = self.name_for(Some(&name.value));
                    self.renames
                        .push((name.value.to_lowercase(), lifted.clone()));
                    self.lifted.push(DerivedQuery {
                        name: lifted,
                        alias: Some(name.value.clone()),
                        kind,
                        location: loc(&tokens[open + 1]),
                        tokens: inner,
                    });
                }
                None => {
                    if !kept.is_empty() {
                        kept.push(TokenWithSpan::new(Token::Comma, tokens[i].span));
                    }
                    kept.extend_from_slice(&tokens[i..open + 1]);
                    kept.extend(inner);
                    kept.push(tokens[close - 1].clone());
                }
            }
            i = close;
            if matches!(token_at(tokens, i), Token::Comma) {
                i += 1;
            } else {
                break;
            }
        }
        if !kept.is_empty() {
            out.push(tokens[0].clone());
            out.extend(kept);
        }
        Ok(i)
    }

    /// The lifted name of the common table expression named at
    /// `tokens[i]`, when it is read there as a relation.
    fn renamed_relation(&self, tokens: &[TokenWithSpan], i: usize) -> Option<String> {
        let Token::Word(w) = &tokens[i].token else {
            return None;
        };
        let prev = i.checked_sub(1).map(|p| &tokens[p].token)?;
        let relation = is_word(prev, "FROM")
            || is_word(prev, "JOIN")
            || is_word(prev, "TABLE")
            || matches!(prev, Token::Comma);
        if !relation || matches!(token_at(tokens, i + 1), Token::Period | Token::LParen) {
            return None;
        }
        let name = w.value.to_lowercase();
        self.renames
            .iter()
            .rev()
            .find(|(cte, _)| *cte == name)
            .map(|(_, lifted)| lifted.clone())
    }

    fn name_for(&mut self, alias: Option<&str>) -> String {
        let base = match alias {
            Some(a) => format!("{}_{}", self.prefix, a.to_lowercase()),
            None => format!("{}_derived", self.prefix),
        };
        let mut name = base.clone();
        let mut n = 2;
        while !self.used.insert(name.clone()) {
            name = format!("{base}{n}");
            n += 1;
        }
        name
    }
}

/// Words that end the FROM clause of a query level.
const ENDS_FROM: &[&str] = &[
    "WHERE",
    "GROUP",
    "HAVING",
    "WINDOW",
    "QUALIFY",
    "ORDER",
    "LIMIT",
    "EMIT",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "WITH",
];

/// `AS name` or `name` at `at`: the alias of the relation before it.
fn alias_after(tokens: &[TokenWithSpan], close: usize) -> Option<String> {
    let at = if is_word(token_at(tokens, close), "AS") {
        close + 1
    } else {
        close
    };
    match token_at(tokens, at) {
        Token::Word(w)
            if w.quote_style.is_some()
                || !NOT_ALIASES.iter().any(|k| is_word(token_at(tokens, at), k)) =>
        {
            Some(w.value.clone())
        }
        _ => None,
    }
}

fn word(value: String, span: datafusion::sql::sqlparser::tokenizer::Span) -> TokenWithSpan {
    TokenWithSpan::new(Token::make_word(&value, None), span)
}

/// Words that may follow a derived table without being its alias.
const NOT_ALIASES: &[&str] = &[
    "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "ON", "USING", "WHERE", "GROUP", "HAVING",
    "WINDOW", "ORDER", "LIMIT", "EMIT", "UNION", "WITH", "WITHIN", "FOR",
];

/// What a subquery becomes when it needs a pipeline of its own: a stream
/// when it windows, a table when it aggregates without a window; `None`
/// when it only filters or projects.
fn own_statement_kind(tokens: &[TokenWithSpan]) -> Option<StatementKind> {
    let mut depth = 0usize;
    let mut windowed = false;
    let mut aggregates = false;
    for (i, t) in tokens.iter().enumerate() {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        let next = token_at(tokens, i + 1);
        if is_word(&t.token, "TABLE")
            && matches!(next, Token::LParen)
            && is_table_function(token_at(tokens, i + 2))
        {
            windowed = true;
        }
        if depth == 0 {
            if is_word(&t.token, "WINDOW") && is_window_function(next) {
                windowed = true;
            }
            if (is_word(&t.token, "GROUP") && is_word(next, "BY"))
                || (is_word(&t.token, "SELECT") && is_word(next, "DISTINCT"))
            {
                aggregates = true;
            }
        }
        if let Token::Word(w) = &t.token {
            if w.quote_style.is_none()
                && matches!(next, Token::LParen)
                && AGGREGATES.contains(&w.value.to_lowercase())
                && !is_word(token_at(tokens, call_end(tokens, i + 1)), "OVER")
            {
                aggregates = true;
            }
        }
    }
    if windowed {
        Some(StatementKind::CreateStream)
    } else if aggregates {
        Some(StatementKind::CreateTable)
    } else {
        None
    }
}

/// Prefix of the columns [`expose_group_keys`] adds; readers' wildcards
/// leave them out.
pub const GROUP_KEY_PREFIX: &str = "_group_";

/// A lifted aggregation is a table whose rows are replaced by key; its key
/// is every GROUP BY expression. Those the query does not select (`SELECT
/// MAX(price) ... GROUP BY id, category`) are added as `_group_<n>`
/// columns, so that a newer row of one group never replaces another's.
pub(crate) fn expose_group_keys(query: &mut Query) {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let GroupByExpr::Expressions(groups, _) = &select.group_by else {
        return;
    };
    let last_name = |e: &Expr| match e {
        Expr::Identifier(i) => Some(i.value.to_lowercase()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.to_lowercase()),
        _ => None,
    };
    let mut added = Vec::new();
    for (n, group) in groups.iter().enumerate() {
        let selected = select.projection.iter().any(|item| match item {
            SelectItem::UnnamedExpr(e) => {
                e == group || (last_name(e).is_some() && last_name(e) == last_name(group))
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                expr == group
                    || matches!(group, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(&alias.value))
            }
            SelectItem::ExprWithAliases { expr, .. } => expr == group,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => true,
        });
        // `GROUP BY 1` names a selected column
        if !selected && !matches!(group, Expr::Value(_)) {
            added.push(SelectItem::ExprWithAlias {
                expr: group.clone(),
                alias: Ident::new(format!("{GROUP_KEY_PREFIX}{}", n + 1)),
            });
        }
    }
    select.projection.extend(added);
}

/// Index just past the argument list that opens at `open`.
fn call_end(tokens: &[TokenWithSpan], open: usize) -> usize {
    matching_paren(tokens, open).unwrap_or(tokens.len())
}

/// Names (and aliases) of every aggregate function of the session.
static AGGREGATES: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let state = crate::catalog::streaming_session_state();
    let mut names: HashSet<String> = HashSet::new();
    for (name, udaf) in state.aggregate_functions() {
        names.insert(name.to_lowercase());
        names.extend(udaf.aliases().iter().map(|a| a.to_lowercase()));
    }
    names
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::split_statements;

    fn lifted(sql: &str) -> (String, Vec<(String, StatementKind, String)>) {
        let tokens = split_statements(sql).unwrap().remove(0).tokens;
        let (rest, derived) = lift("q", &tokens).unwrap();
        let text = |ts: &[TokenWithSpan]| {
            ts.iter()
                .map(|t| t.token.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        (
            text(&rest),
            derived
                .iter()
                .map(|d| (d.name.clone(), d.kind, text(&d.tokens)))
                .collect(),
        )
    }

    #[test]
    fn windowed_and_aggregating_subqueries_become_statements_inner_first() {
        let (rest, derived) = lifted(
            "SELECT a.x FROM (SELECT x, COUNT(*) AS n FROM s WINDOW TUMBLING(ts, 10s) GROUP BY x) AS A \
             JOIN (SELECT MAX(n) AS m FROM (SELECT COUNT(*) AS n FROM s GROUP BY x WINDOW TUMBLING(ts, 10s)) c) b ON a.n = b.m",
        );
        assert_eq!(
            rest,
            "SELECT a . x FROM q_a AS A JOIN q_b b ON a . n = b . m"
        );
        let kinds: Vec<_> = derived.iter().map(|(n, k, _)| (n.as_str(), *k)).collect();
        assert_eq!(
            kinds,
            vec![
                ("q_a", StatementKind::CreateStream),
                ("q_c", StatementKind::CreateStream),
                ("q_b", StatementKind::CreateTable),
            ]
        );
        assert_eq!(derived[2].2, "SELECT MAX ( n ) AS m FROM q_c c");
    }

    #[test]
    fn projections_and_other_subqueries_stay_inline() {
        let sql = "SELECT x FROM (SELECT x, ROW_NUMBER() OVER (PARTITION BY x ORDER BY y) AS rn, SUM(y) OVER (PARTITION BY x) AS t FROM s) r \
                   WHERE x IN (SELECT MAX(x) FROM s)";
        let (rest, derived) = lifted(sql);
        assert!(derived.is_empty(), "{derived:?}");
        assert!(rest.starts_with("SELECT x FROM ( SELECT x"), "{rest}");
    }

    #[test]
    fn aggregating_common_table_expressions_are_lifted_and_read_under_their_name() {
        let (rest, derived) = lifted(
            "WITH per AS (SELECT c, COUNT(*) AS n FROM s GROUP BY c), big AS (SELECT * FROM s WHERE v > 1) \
             SELECT n, COUNT(*) FROM per GROUP BY n",
        );
        assert_eq!(
            rest,
            "WITH big AS ( SELECT * FROM s WHERE v > 1 ) SELECT n , COUNT ( * ) FROM q_per AS per GROUP BY n"
        );
        assert_eq!(derived.len(), 1);
        assert_eq!(derived[0].1, StatementKind::CreateTable);
    }

    #[test]
    fn names_are_unique_without_aliases() {
        let (rest, derived) = lifted(
            "SELECT * FROM (SELECT k, COUNT(*) FROM s GROUP BY k), (SELECT k, SUM(v) FROM t GROUP BY k)",
        );
        assert_eq!(rest, "SELECT * FROM q_derived , q_derived2");
        assert_eq!(derived.len(), 2);
    }
}
