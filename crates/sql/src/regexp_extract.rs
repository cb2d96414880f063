//! `REGEXP_EXTRACT(string, pattern [, group])`, as Flink SQL, Spark and
//! DuckDB spell it: the text of capture group `group` (0, the default, is
//! the whole match) of the first match of `pattern`, or NULL when the
//! pattern does not match or the group took no part in the match.
//!
//! DataFusion's `regexp_match` returns every group as a list; this is the
//! scalar users of other engines write. A constant pattern (the usual
//! case) is compiled once per batch; a pattern that is not a valid regular
//! expression, or a group the pattern does not have, fails the row, which
//! the statement's error policy then handles.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use regex::Regex;

#[derive(Debug, PartialEq, Eq, Hash)]
struct RegexpExtract {
    signature: Signature,
}

impl ScalarUDFImpl for RegexpExtract {
    fn name(&self) -> &str {
        "regexp_extract"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let text = |t: &DataType| {
            matches!(
                t,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
            )
        };
        match arg_types {
            [s, p] if text(s) && text(p) => Ok(vec![DataType::Utf8, DataType::Utf8]),
            [s, p, g] if text(s) && text(p) && (g.is_integer() || g == &DataType::Null) => {
                Ok(vec![DataType::Utf8, DataType::Utf8, DataType::Int64])
            }
            _ => plan_err!(
                "regexp_extract takes (string, pattern [, group]) with text string and pattern and an integer group, not ({})",
                arg_types.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let strings = cast(&arrays[0], &DataType::Utf8)?;
        let strings = strings.as_string::<i32>();
        let patterns = cast(&arrays[1], &DataType::Utf8)?;
        let patterns = patterns.as_string::<i32>();
        let groups: Option<Int64Array> = match arrays.get(2) {
            Some(g) => Some(cast(g, &DataType::Int64)?.as_primitive().clone()),
            None => None,
        };
        let mut compiled: Option<(String, Regex)> = None;
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        for i in 0..rows {
            let group = match &groups {
                Some(g) if g.is_null(i) => None,
                Some(g) => Some(g.value(i)),
                None => Some(0),
            };
            if strings.is_null(i) || patterns.is_null(i) || group.is_none() {
                out.append_null();
                continue;
            }
            let pattern = patterns.value(i);
            if compiled.as_ref().is_none_or(|(p, _)| p != pattern) {
                match Regex::new(pattern) {
                    Ok(re) => compiled = Some((pattern.to_string(), re)),
                    Err(e) => return exec_err!("regexp_extract: invalid pattern '{pattern}': {e}"),
                }
            }
            let re = &compiled.as_ref().expect("compiled above").1;
            let group = group.expect("checked above");
            let Some(index) = usize::try_from(group)
                .ok()
                .filter(|g| *g < re.captures_len())
            else {
                return exec_err!(
                    "regexp_extract: group {group} does not exist in '{pattern}' (it has {} groups)",
                    re.captures_len() - 1
                );
            };
            match re.captures(strings.value(i)).and_then(|c| c.get(index)) {
                Some(m) => out.append_value(m.as_str()),
                None => out.append_null(),
            }
        }
        let result: ArrayRef = Arc::new(out.finish());
        Ok(ColumnarValue::Array(result))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: std::sync::LazyLock<Documentation> = std::sync::LazyLock::new(|| {
            Documentation::builder(
                datafusion::logical_expr::DocSection {
                    include: true,
                    label: "Regular Expression Functions",
                    description: None,
                },
                "Returns the text of a capture group of the first match of a regular expression (0, the default, is the whole match), or NULL when the expression does not match.",
                "regexp_extract(str, regexp[, group])",
            )
            .with_sql_example("```sql\n> SELECT regexp_extract('order-1234', 'order-([0-9]+)', 1);\n1234\n```")
            .build()
        });
        Some(&DOC)
    }
}

/// The `regexp_extract` scalar function.
pub fn regexp_extract_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(RegexpExtract {
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::Field;
    use datafusion::common::ScalarValue;

    fn extract(
        strings: Vec<Option<&str>>,
        pattern: &str,
        group: Option<i64>,
    ) -> Result<Vec<Option<String>>> {
        let n = strings.len();
        let mut args = vec![
            ColumnarValue::Array(Arc::new(StringArray::from(strings))),
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(pattern.into()))),
        ];
        if let Some(g) = group {
            args.push(ColumnarValue::Scalar(ScalarValue::Int64(Some(g))));
        }
        let arg_fields = args
            .iter()
            .map(|a| Arc::new(Field::new("a", a.data_type(), true)))
            .collect();
        let out = regexp_extract_udf().invoke_with_args(ScalarFunctionArgs {
            args,
            arg_fields,
            number_rows: n,
            return_field: Arc::new(Field::new("r", DataType::Utf8, true)),
            config_options: Arc::new(Default::default()),
        })?;
        let ColumnarValue::Array(a) = out else {
            panic!("an array")
        };
        Ok(a.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect())
    }

    #[test]
    fn whole_match_by_default_group_on_request_null_without_match() {
        let rows = vec![Some("order-12 and order-34"), Some("none"), None];
        assert_eq!(
            extract(rows.clone(), "order-([0-9]+)", None).unwrap(),
            vec![Some("order-12".into()), None, None]
        );
        assert_eq!(
            extract(rows, "order-([0-9]+)", Some(1)).unwrap(),
            vec![Some("12".into()), None, None]
        );
    }

    #[test]
    fn a_missing_group_or_a_bad_pattern_is_an_error_naming_it() {
        let err = extract(vec![Some("a")], "(a)", Some(2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("group 2 does not exist"), "{err}");
        let err = extract(vec![Some("a")], "(a", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid pattern"), "{err}");
    }
}
