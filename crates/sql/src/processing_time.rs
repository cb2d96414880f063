//! `now()` (and `current_timestamp`) in a continuous query: the time a row
//! is processed. DataFusion replaces `now()` by the query's start time,
//! which for a query that runs for days would be a constant from its first
//! second; here it is read from the clock for every batch, so every row of
//! a batch sees the moment its batch was processed, in UTC.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The instants' time zone: the session's (`+00:00`).
const UTC: &str = "+00:00";

#[derive(Debug, PartialEq, Eq, Hash)]
struct ProcessingTime {
    signature: Signature,
    aliases: Vec<String>,
}

impl ScalarUDFImpl for ProcessingTime {
    fn name(&self) -> &str {
        "now"
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Nanosecond,
            Some(Arc::from(UTC)),
        ))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_nanos()).ok());
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(
            now,
            Some(Arc::from(UTC)),
        )))
    }
}

/// `now()` as processing time (volatile: never folded into a constant).
pub fn now_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ProcessingTime {
        signature: Signature::nullary(Volatility::Volatile),
        aliases: vec!["current_timestamp".to_string()],
    })
}
