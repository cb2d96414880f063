//! `ROUND` with one result type per call.
//!
//! DataFusion's `round` derives a DECIMAL result's scale from a literal
//! number of places, so `round(d, 3)` is typed `DECIMAL(18,3)` while its
//! literal is still a literal and `DECIMAL(19,4)` once type coercion has
//! wrapped the literal in a cast. The two types meet when the call sits
//! inside `COALESCE` or `CASE` (planning fails: "'then' values had multiple
//! data types") or feeds a projection (the job failed on the first batch).
//! This wrapper types every call as DataFusion types a call with a
//! non-literal number of places — the input's scale, one more digit of
//! precision for a carry — whatever the argument looks like; the values are
//! DataFusion's, rounded half away from zero.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// `round` over DataFusion's, with a stable result type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StableRound {
    inner: Arc<ScalarUDF>,
}

impl StableRound {
    /// Wraps DataFusion's `round` (`inner`).
    pub fn new(inner: Arc<ScalarUDF>) -> Self {
        Self { inner }
    }
}

impl ScalarUDFImpl for StableRound {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        // a second argument is never taken as a literal: the type must not
        // change when coercion casts it
        let unknown: Vec<Option<&datafusion::common::ScalarValue>> =
            vec![None; args.scalar_arguments.len()];
        let scalar_arguments = if args.scalar_arguments.len() >= 2 {
            &unknown[..]
        } else {
            args.scalar_arguments
        };
        self.inner.inner().return_field_from_args(ReturnFieldArgs {
            arg_fields: args.arg_fields,
            scalar_arguments,
        })
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.inner.invoke_with_args(args)
    }
}
