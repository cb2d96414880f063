//! `HEADER('name')`: the value of a Kafka message header, as text (NULL
//! when the message has no such header). The front end rewrites
//! `HEADER('x')` into `header(_headers, 'x')`, this function over the
//! source's `_headers` map column.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{visit_expressions_mut, ObjectNamePart};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, Query,
};

use crate::system_columns::HEADERS;

#[derive(Debug, PartialEq, Eq, Hash)]
struct HeaderFunction {
    signature: Signature,
}

/// The `header(map, name)` function.
pub fn header_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(HeaderFunction {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

impl ScalarUDFImpl for HeaderFunction {
    fn name(&self) -> &str {
        "header"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [headers, name] = args.args.as_slice() else {
            return exec_err!("HEADER takes one argument, the header name");
        };
        let ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(name)) | ScalarValue::LargeUtf8(Some(name)),
        ) = name
        else {
            return exec_err!("HEADER takes the header name as a string literal");
        };
        let headers = headers.to_array(args.number_rows)?;
        let Some(map) = headers.as_map_opt() else {
            return exec_err!("HEADER reads the _headers column of a Kafka source");
        };
        let keys = map.keys().as_string::<i32>();
        let values = map.values().as_string::<i32>();
        let mut out = StringBuilder::new();
        for row in 0..map.len() {
            let range = map.value_offsets()[row] as usize..map.value_offsets()[row + 1] as usize;
            // the last header of that name wins, as with repeated Kafka headers
            let found = range
                .rev()
                .find(|&i| keys.value(i) == name)
                .filter(|&i| values.is_valid(i))
                .map(|i| values.value(i));
            out.append_option(if map.is_valid(row) { found } else { None });
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Rewrites `HEADER('x')` into `header(_headers, 'x')` throughout `query`.
pub fn rewrite_header_calls(query: &mut Query) {
    let _ = visit_expressions_mut(query, |expr: &mut SqlExpr| {
        if let SqlExpr::Function(f) = expr {
            let is_header = matches!(
                f.name.0.as_slice(),
                [ObjectNamePart::Identifier(i)] if i.value.eq_ignore_ascii_case("header")
            );
            if let (true, FunctionArguments::List(list)) = (is_header, &mut f.args) {
                if list.args.len() == 1 {
                    list.args.insert(
                        0,
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Identifier(
                            Ident::new(HEADERS),
                        ))),
                    );
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}
