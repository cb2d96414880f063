//! One decoder per output column: a JSON value appended to an Arrow
//! builder exactly as arrow-json's decoder of that type (with
//! `coerce_primitive`) would read it, with the same text parsers. A value
//! arrow-json would refuse is a [`Decline`], so arrow-json reports it.

use std::sync::Arc;

use datafusion::arrow::array::builder::NullBufferBuilder;
use datafusion::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, BooleanBuilder, GenericStringArray, OffsetSizeTrait,
    PrimitiveBuilder,
};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::kernels::cast_utils::{parse_decimal, Parser};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use num_traits::NumCast;

use super::scan::{unescape, Decline, Scan, Value};

/// Appends one column's values.
pub trait ColumnDecoder: Send {
    /// Appends `value`; `scratch` holds a string's resolved escapes.
    fn push(&mut self, value: Value<'_>, scratch: &mut Vec<u8>) -> Scan<()>;
    fn push_null(&mut self);
    /// The values appended since the last call; declines when a string
    /// is not UTF-8 (the input's check makes that unreachable).
    fn finish(&mut self) -> Scan<ArrayRef>;
}

/// A decoder for `data_type`, or `None` when only arrow-json reads it
/// (nested and temporal types: time columns arrive here as text).
pub fn for_type(data_type: &DataType) -> Option<Box<dyn ColumnDecoder>> {
    Some(match data_type {
        DataType::Utf8 => Box::new(Text::<i32>::default()),
        DataType::LargeUtf8 => Box::new(Text::<i64>::default()),
        DataType::Boolean => Box::new(Boolean(BooleanBuilder::new())),
        DataType::Int8 => Number::<Int8Type>::boxed(),
        DataType::Int16 => Number::<Int16Type>::boxed(),
        DataType::Int32 => Number::<Int32Type>::boxed(),
        DataType::Int64 => Number::<Int64Type>::boxed(),
        DataType::UInt8 => Number::<UInt8Type>::boxed(),
        DataType::UInt16 => Number::<UInt16Type>::boxed(),
        DataType::UInt32 => Number::<UInt32Type>::boxed(),
        DataType::UInt64 => Number::<UInt64Type>::boxed(),
        DataType::Float32 => Number::<Float32Type>::boxed(),
        DataType::Float64 => Number::<Float64Type>::boxed(),
        &DataType::Decimal128(precision, scale) => Box::new(Decimal {
            builder: PrimitiveBuilder::new().with_data_type(data_type.clone()),
            precision,
            scale,
        }),
        _ => return None,
    })
}

/// A string column: strings as they are, numbers as written, booleans as
/// `true`/`false`; objects and arrays are refused. Values are gathered as
/// bytes and checked as UTF-8 once per batch.
struct Text<O: OffsetSizeTrait> {
    values: Vec<u8>,
    offsets: Vec<O>,
    nulls: NullBufferBuilder,
}

impl<O: OffsetSizeTrait> Default for Text<O> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            offsets: vec![O::zero()],
            nulls: NullBufferBuilder::new(0),
        }
    }
}

impl<O: OffsetSizeTrait> Text<O> {
    #[inline]
    fn append(&mut self, bytes: &[u8]) -> Scan<()> {
        self.values.extend_from_slice(bytes);
        self.offsets
            .push(O::from_usize(self.values.len()).ok_or(Decline)?);
        self.nulls.append_non_null();
        Ok(())
    }
}

impl<O: OffsetSizeTrait> ColumnDecoder for Text<O> {
    #[inline]
    fn push(&mut self, value: Value<'_>, scratch: &mut Vec<u8>) -> Scan<()> {
        match value {
            Value::Str { raw, escaped } => self.append(unescape(raw, escaped, scratch)),
            Value::Number(text) => self.append(text),
            Value::True => self.append(b"true"),
            Value::False => self.append(b"false"),
            Value::Null => {
                self.push_null();
                Ok(())
            }
            Value::Nested => Err(Decline),
        }
    }

    fn push_null(&mut self) {
        self.offsets
            .push(*self.offsets.last().expect("first offset"));
        self.nulls.append_null();
    }

    /// The next batch's buffers start as large as this one's were, so a
    /// batch is built without growing (and moving) them step by step.
    fn finish(&mut self) -> Scan<ArrayRef> {
        let mut next_offsets = Vec::with_capacity(self.offsets.len());
        next_offsets.push(O::zero());
        let offsets = std::mem::replace(&mut self.offsets, next_offsets);
        let capacity = self.values.len();
        let values = std::mem::replace(&mut self.values, Vec::with_capacity(capacity));
        let nulls = self.nulls.finish();
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        GenericStringArray::<O>::try_new(offsets, values.into(), nulls)
            .map(|array| Arc::new(array) as ArrayRef)
            .map_err(|_| Decline)
    }
}

struct Boolean(BooleanBuilder);

impl ColumnDecoder for Boolean {
    fn push(&mut self, value: Value<'_>, _: &mut Vec<u8>) -> Scan<()> {
        match value {
            Value::True => self.0.append_value(true),
            Value::False => self.0.append_value(false),
            Value::Null => self.0.append_null(),
            _ => return Err(Decline),
        }
        Ok(())
    }

    fn push_null(&mut self) {
        self.0.append_null()
    }

    fn finish(&mut self) -> Scan<ArrayRef> {
        let array = self.0.finish();
        self.0 = BooleanBuilder::with_capacity(array.len());
        Ok(Arc::new(array))
    }
}

/// How arrow-json reads a JSON number into a native type: integers as
/// integers, else as a double cast to the integer if it fits (so `1e3` is
/// 1000); floats as floats.
trait FromJsonNumber: Sized {
    fn from_number(text: &[u8]) -> Option<Self>;
}

macro_rules! integer_from_json {
    ($($t:ty),+) => {$(
        impl FromJsonNumber for $t {
            #[inline]
            fn from_number(text: &[u8]) -> Option<Self> {
                match lexical_core::parse::<$t>(text) {
                    Ok(v) => Some(v),
                    Err(_) => lexical_core::parse::<f64>(text).ok().and_then(NumCast::from),
                }
            }
        }
    )+};
}
integer_from_json!(i8, i16, i32, i64, u8, u16, u32, u64);

macro_rules! float_from_json {
    ($($t:ty),+) => {$(
        impl FromJsonNumber for $t {
            #[inline]
            fn from_number(text: &[u8]) -> Option<Self> {
                lexical_core::parse::<$t>(text).ok()
            }
        }
    )+};
}
float_from_json!(f32, f64);

/// A numeric column: a JSON number read as arrow-json reads it, a string
/// with Arrow's text parser (as arrow-json does).
struct Number<P: ArrowPrimitiveType> {
    builder: PrimitiveBuilder<P>,
}

impl<P> Number<P>
where
    P: ArrowPrimitiveType + Parser,
    P::Native: FromJsonNumber,
{
    fn boxed() -> Box<dyn ColumnDecoder> {
        Box::new(Self {
            builder: PrimitiveBuilder::new(),
        })
    }
}

impl<P> ColumnDecoder for Number<P>
where
    P: ArrowPrimitiveType + Parser,
    P::Native: FromJsonNumber,
{
    #[inline]
    fn push(&mut self, value: Value<'_>, scratch: &mut Vec<u8>) -> Scan<()> {
        let parsed = match value {
            Value::Number(text) => P::Native::from_number(text),
            Value::Str { raw, escaped } => std::str::from_utf8(unescape(raw, escaped, scratch))
                .ok()
                .and_then(P::parse),
            Value::Null => {
                self.builder.append_null();
                return Ok(());
            }
            _ => None,
        };
        self.builder.append_value(parsed.ok_or(Decline)?);
        Ok(())
    }

    fn push_null(&mut self) {
        self.builder.append_null()
    }

    fn finish(&mut self) -> Scan<ArrayRef> {
        Ok(finish_primitive(&mut self.builder))
    }
}

/// The column built so far; the builder starts again at its size, with
/// its data type (a decimal's precision and scale, a timestamp's zone).
fn finish_primitive<T: ArrowPrimitiveType>(builder: &mut PrimitiveBuilder<T>) -> ArrayRef {
    let array = builder.finish();
    *builder = PrimitiveBuilder::with_capacity(array.len())
        .with_data_type(Array::data_type(&array).clone());
    Arc::new(array)
}

/// An exact decimal column: the text of a number or string parsed to the
/// column's precision and scale (never through a double).
struct Decimal {
    builder: PrimitiveBuilder<Decimal128Type>,
    precision: u8,
    scale: i8,
}

impl ColumnDecoder for Decimal {
    #[inline]
    fn push(&mut self, value: Value<'_>, scratch: &mut Vec<u8>) -> Scan<()> {
        let bytes = match value {
            Value::Number(text) => text,
            Value::Str { raw, escaped } => unescape(raw, escaped, scratch),
            Value::Null => {
                self.builder.append_null();
                return Ok(());
            }
            _ => return Err(Decline),
        };
        if let Some(value) = plain_decimal(bytes, self.precision, self.scale) {
            self.builder.append_value(value);
            return Ok(());
        }
        if long_exponent(bytes) {
            return Err(Decline);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| Decline)?;
        let parsed = parse_decimal::<Decimal128Type>(text, self.precision, self.scale)
            .map_err(|_| Decline)?;
        self.builder.append_value(parsed);
        Ok(())
    }

    fn push_null(&mut self) {
        self.builder.append_null()
    }

    fn finish(&mut self) -> Scan<ArrayRef> {
        Ok(finish_primitive(&mut self.builder))
    }
}

/// Whether a number's exponent has more than four digits: arrow's decimal
/// parser keeps exponents in 16 bits, and no such exponent fits a decimal
/// anyway, so arrow-json reports the record.
fn long_exponent(text: &[u8]) -> bool {
    text.iter()
        .position(|&b| b == b'e' || b == b'E')
        .is_some_and(|e| {
            let digits = text[e + 1..].iter().filter(|b| b.is_ascii_digit()).count();
            digits > 4
        })
}

/// A plain decimal (`-12.5`: digits, a point, digits, no exponent) whose
/// digits fit `precision` and `scale` as written, read directly; `None` for
/// anything else, which Arrow's parser reads. The value is the one
/// `parse_decimal` gives: the digits scaled to `scale`.
fn plain_decimal(text: &[u8], precision: u8, scale: i8) -> Option<i128> {
    let scale = usize::try_from(scale).ok()?;
    let (negative, digits) = match text.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, text),
    };
    let (whole, fraction) = match digits.iter().position(|&b| b == b'.') {
        Some(point) => (&digits[..point], &digits[point + 1..]),
        None => (digits, &[][..]),
    };
    let significant = whole
        .iter()
        .position(|&b| b != b'0')
        .map_or(0, |i| whole.len() - i);
    if (whole.is_empty() && fraction.is_empty())
        || fraction.len() > scale
        || significant + scale > precision as usize
    {
        return None;
    }
    let mut value: i128 = 0;
    for &b in whole.iter().chain(fraction) {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + (b - b'0') as i128;
    }
    value *= 10i128.checked_pow((scale - fraction.len()) as u32)?;
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every plain decimal read directly is what Arrow's parser reads.
    #[test]
    fn plain_decimals_are_read_as_arrow_reads_them() {
        let texts = [
            "0",
            "-0",
            "1",
            "12.5",
            "-12.50",
            "007.25",
            ".5",
            "1.",
            "99999999.99",
            "0.05",
            "-0.001",
            "123456789012",
            "1.234",
            "12.3.4",
            "1e2",
            "+5",
            "-",
            ".",
            "",
            "1a",
            "00000000000000.1",
        ];
        for (precision, scale) in [(10u8, 2i8), (12, 4), (38, 10), (5, 0), (3, 3)] {
            for text in texts {
                let ours = plain_decimal(text.as_bytes(), precision, scale);
                let arrow = parse_decimal::<Decimal128Type>(text, precision, scale).ok();
                if let Some(value) = ours {
                    assert_eq!(Some(value), arrow, "{text} as ({precision}, {scale})");
                }
            }
        }
        // the common forms are read directly
        assert_eq!(plain_decimal(b"187.25", 12, 2), Some(18725));
        assert_eq!(plain_decimal(b"-3.5", 12, 2), Some(-350));
    }
}
