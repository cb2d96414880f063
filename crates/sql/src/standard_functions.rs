//! Function names from the SQL standard (and from the engines users come
//! from) that DataFusion spells as an operator: `MOD(a, b)` is `a % b`.
//!
//! The call is rewritten in the statement before planning, so it takes the
//! operator's type rules exactly (integers stay integers, DECIMAL stays
//! exact) and a query with `MOD` plans as the same query with `%`.
//!
//! Likewise `LIKE 'a#%' ESCAPE '#'`: DataFusion escapes with a backslash
//! only, so a constant pattern with another escape character is rewritten
//! into the same pattern escaped with backslashes.

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, BinaryOperator, Expr as SqlExpr, FunctionArg, FunctionArgExpr,
    FunctionArguments, ObjectNamePart, Query, Value,
};

/// Rewrites `MOD(a, b)` into `(a % b)` throughout `query`. A call with
/// another number of arguments is left alone, so DataFusion names it in
/// its error.
pub fn rewrite_standard_calls(query: &mut Query) {
    let _ = visit_expressions_mut(query, |expr: &mut SqlExpr| {
        if let SqlExpr::Like {
            pattern,
            escape_char,
            ..
        }
        | SqlExpr::ILike {
            pattern,
            escape_char,
            ..
        } = expr
        {
            backslash_escaped(pattern, escape_char);
        }
        if let Some((left, right)) = mod_arguments(expr) {
            *expr = SqlExpr::Nested(Box::new(SqlExpr::BinaryOp {
                left: Box::new(left),
                op: BinaryOperator::Modulo,
                right: Box::new(right),
            }));
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// Rewrites a constant LIKE pattern escaped with another character than
/// the backslash into the backslash form (a literal backslash doubled).
fn backslash_escaped(
    pattern: &mut SqlExpr,
    escape: &mut Option<datafusion::sql::sqlparser::ast::ValueWithSpan>,
) {
    let Some(Value::SingleQuotedString(e)) = escape.as_ref().map(|v| &v.value) else {
        return;
    };
    let mut chars = e.chars();
    let (Some(esc), None) = (chars.next(), chars.next()) else {
        return;
    };
    if esc == '\\' {
        return;
    }
    let SqlExpr::Value(v) = pattern else {
        return;
    };
    let Value::SingleQuotedString(text) = &v.value else {
        return;
    };
    let mut out = String::with_capacity(text.len() + 2);
    let mut it = text.chars();
    while let Some(c) = it.next() {
        if c == esc {
            if let Some(next) = it.next() {
                out.push('\\');
                out.push(next);
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    v.value = Value::SingleQuotedString(out);
    *escape = None;
}

/// The two plain arguments of a `MOD(a, b)` call.
fn mod_arguments(expr: &SqlExpr) -> Option<(SqlExpr, SqlExpr)> {
    let SqlExpr::Function(f) = expr else {
        return None;
    };
    let named_mod = matches!(
        f.name.0.as_slice(),
        [ObjectNamePart::Identifier(i)] if i.value.eq_ignore_ascii_case("mod")
    );
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    if !named_mod || list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return None;
    }
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(a)), FunctionArg::Unnamed(FunctionArgExpr::Expr(b))] => {
            Some((a.clone(), b.clone()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> String {
        let mut statements = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        let datafusion::sql::sqlparser::ast::Statement::Query(query) = &mut statements[0] else {
            panic!("not a query");
        };
        rewrite_standard_calls(query);
        query.to_string()
    }

    #[test]
    fn mod_becomes_the_remainder_operator_even_nested() {
        assert_eq!(
            rewritten("SELECT MOD(a, 123), mod(MOD(b, 7), 3) FROM t WHERE Mod(a, 2) = 0"),
            "SELECT (a % 123), ((b % 7) % 3) FROM t WHERE (a % 2) = 0"
        );
    }

    #[test]
    fn like_escapes_become_backslashes() {
        assert_eq!(
            rewritten("SELECT a LIKE 'x#%y#_' ESCAPE '#' FROM t"),
            r"SELECT a LIKE 'x\%y\_' FROM t"
        );
    }

    #[test]
    fn other_arities_are_left_for_the_planner_to_refuse() {
        assert_eq!(rewritten("SELECT mod(a) FROM t"), "SELECT mod(a) FROM t");
    }
}
