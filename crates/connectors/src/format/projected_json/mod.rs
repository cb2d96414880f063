//! The fast JSON Lines decoder: fields the query uses go straight from the
//! text into Arrow builders; the others are checked and skipped without
//! being copied anywhere.
//!
//! arrow-json's decoder first copies every field of every record onto a
//! tape, then reads the tape column by column; on records with more fields
//! than the query uses, most of that work is thrown away. This decoder reads
//! each record once, looks each key up (predicting it from the record
//! before, since JSON producers write keys in a fixed order), and parses
//! only the values of used columns, with arrow's own number and decimal
//! parsers. It reads a strict subset of what arrow-json reads and declines
//! the rest (see [`scan`]): the caller then decodes that batch with
//! arrow-json, which also finds and reports bad records. So results are
//! identical by construction, and bad input costs only its own batch.

mod columns;
mod scan;

use std::collections::HashMap;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use columns::ColumnDecoder;
use scan::Cursor;
pub use scan::Decline;

/// The most member positions remembered for key prediction.
const MAX_HINTS: usize = 256;

/// Decodes batches of JSON Lines into one schema's columns.
pub struct ProjectedJson {
    schema: SchemaRef,
    columns: Vec<Box<dyn ColumnDecoder>>,
    /// Column of each field name the schema has.
    by_name: HashMap<Box<[u8]>, usize>,
    /// The key at each member position of the last record and its column:
    /// the prediction for the next record.
    hints: Vec<KeyHint>,
    /// For each column, 1 + the row that last set it.
    filled: Vec<usize>,
    /// A string's escapes resolved.
    scratch: Vec<u8>,
}

/// A batch decoded: the bytes it took from the front of the input, the
/// records in it, and their columns (`None` when there were none).
pub struct Decoded {
    pub consumed: usize,
    pub batch: Option<RecordBatch>,
}

impl ProjectedJson {
    /// A decoder for `schema`, or `None` when a column has a type only
    /// arrow-json decodes.
    pub fn new(schema: &SchemaRef) -> Option<Self> {
        let columns = schema
            .fields()
            .iter()
            .map(|f| columns::for_type(f.data_type()))
            .collect::<Option<Vec<_>>>()?;
        let by_name = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().as_bytes().into(), i))
            .collect();
        Some(Self {
            schema: schema.clone(),
            filled: vec![0; columns.len()],
            columns,
            by_name,
            hints: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Decodes up to `max_records` records (one JSON object per line) from
    /// the front of `input`, whole lines only. Declines when a line is not
    /// read here as arrow-json would read it, or is longer than
    /// `max_record_bytes`; nothing is kept of a declined batch.
    pub fn decode(
        &mut self,
        input: &[u8],
        max_records: usize,
        max_record_bytes: usize,
    ) -> Result<Decoded, Decline> {
        let result = self
            .records(input, max_records, max_record_bytes)
            // the batch's bytes are text, as arrow-json checks its strings
            .and_then(
                |(rows, end)| match simdutf8::basic::from_utf8(&input[..end]) {
                    Ok(_) => Ok((rows, end)),
                    Err(_) => Err(Decline),
                },
            );
        let (rows, end) = match result {
            Ok(read) => read,
            Err(declined) => {
                // a declined batch leaves nothing in the builders
                self.columns.iter_mut().for_each(|c| drop(c.finish()));
                return Err(declined);
            }
        };
        let batch = (rows > 0).then(|| self.batch(rows)).transpose()?;
        Ok(Decoded {
            consumed: end,
            batch,
        })
    }

    /// Reads up to `max_records` records from the front of `input` into
    /// the builders; returns how many, and the bytes they took.
    fn records(
        &mut self,
        input: &[u8],
        max_records: usize,
        max_record_bytes: usize,
    ) -> Result<(usize, usize), Decline> {
        self.filled.fill(0);
        let mut cursor = Cursor::new(input);
        let mut rows = 0;
        loop {
            cursor.skip_blank();
            if cursor.at_end() || rows == max_records {
                return Ok((rows, cursor.pos()));
            }
            let start = cursor.pos();
            self.record(&mut cursor, rows + 1)?;
            cursor.skip_space();
            // one record per line, the line ends after it
            if !cursor.at_end() {
                cursor.expect(b'\n')?;
            }
            if cursor.pos() - start > max_record_bytes {
                return Err(Decline);
            }
            rows += 1;
        }
    }

    /// One object into the columns of row `row - 1`; a column it does not
    /// name is null.
    fn record(&mut self, cursor: &mut Cursor<'_>, row: usize) -> Result<(), Decline> {
        cursor.expect(b'{')?;
        cursor.skip_space();
        if !cursor.eat(b'}') {
            let mut member = 0;
            loop {
                let column = self.key(cursor, member)?;
                cursor.skip_space();
                let value = cursor.value()?;
                if let Some(c) = column {
                    // arrow-json keeps the last of repeated keys; rare enough to leave to it
                    if self.filled[c] == row {
                        return Err(Decline);
                    }
                    self.filled[c] = row;
                    self.columns[c].push(value, &mut self.scratch)?;
                }
                member += 1;
                cursor.skip_space();
                if cursor.eat(b'}') {
                    break;
                }
                cursor.expect(b',')?;
                cursor.skip_space();
            }
        }
        for (column, filled) in self.columns.iter_mut().zip(&self.filled) {
            if *filled != row {
                column.push_null();
            }
        }
        Ok(())
    }

    /// The key of the record's member number `member`, through its colon,
    /// and its column. The last record's key at that position is tried
    /// first, byte for byte with its quotes and colon (`"id":`), since
    /// producers write keys in a fixed order; else the key is scanned,
    /// looked up and remembered.
    #[inline(always)]
    fn key(&mut self, cursor: &mut Cursor<'_>, member: usize) -> Result<Option<usize>, Decline> {
        if let Some(hint) = self.hints.get(member) {
            if hint.matches(cursor.rest()) {
                cursor.advance(hint.pattern.len());
                return Ok(hint.column);
            }
        }
        let start = cursor.pos();
        cursor.expect(b'"')?;
        let (key, escaped) = cursor.string()?;
        if escaped {
            return Err(Decline);
        }
        let column = self.by_name.get(key).copied();
        cursor.skip_space();
        cursor.expect(b':')?;
        let hint = KeyHint::new(cursor.since(start), column);
        if member < self.hints.len() {
            self.hints[member] = hint;
        } else if member == self.hints.len() && member < MAX_HINTS {
            self.hints.push(hint);
        }
        Ok(column)
    }

    /// The builders' rows as a batch; a null in a column that may not hold
    /// one declines (arrow-json reports that record).
    fn batch(&mut self, rows: usize) -> Result<RecordBatch, Decline> {
        let arrays = self
            .columns
            .iter_mut()
            .map(|c| c.finish())
            .collect::<Result<Vec<ArrayRef>, Decline>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .map_err(|_| Decline)
    }
}

/// A key as the last record wrote it at one member position: its bytes
/// from the opening quote through the colon, and its column. Patterns of up
/// to 16 bytes are compared as two masked words.
struct KeyHint {
    pattern: Box<[u8]>,
    words: [u64; 2],
    masks: [u64; 2],
    column: Option<usize>,
}

impl KeyHint {
    fn new(pattern: &[u8], column: Option<usize>) -> Self {
        let mut padded = [0u8; 16];
        let mut mask = [0u8; 16];
        let n = pattern.len().min(16);
        padded[..n].copy_from_slice(&pattern[..n]);
        mask[..n].fill(0xFF);
        let word = |bytes: &[u8; 16], half: usize| {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&bytes[half * 8..half * 8 + 8]);
            u64::from_le_bytes(eight)
        };
        Self {
            pattern: pattern.into(),
            words: [word(&padded, 0), word(&padded, 1)],
            masks: [word(&mask, 0), word(&mask, 1)],
            column,
        }
    }

    /// Whether `rest` starts with this key.
    #[inline(always)]
    fn matches(&self, rest: &[u8]) -> bool {
        match rest.get(..16) {
            Some(sixteen) if self.pattern.len() <= 16 => {
                let (a, b) = sixteen.split_at(8);
                let a = u64::from_le_bytes(a.try_into().unwrap_or_default());
                let b = u64::from_le_bytes(b.try_into().unwrap_or_default());
                ((a ^ self.words[0]) & self.masks[0]) | ((b ^ self.words[1]) & self.masks[1]) == 0
            }
            _ => rest.starts_with(&self.pattern),
        }
    }
}

#[cfg(test)]
mod tests;
