//! Interning of GROUP BY keys: maps each distinct key to a dense group
//! index. Keys are stored once, in Arrow's row format, so lookups hash a
//! byte slice of the batch's rows and allocate only for new groups.

// foldhash: much cheaper than SipHash for the per-record key lookups
use hashbrown::HashMap;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{FieldRef, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};

use crate::error::Result;

pub struct GroupKeys {
    /// `None` for a global aggregate (no GROUP BY): everything is group 0.
    converter: Option<RowConverter>,
    index: HashMap<Box<[u8]>, usize>,
    keys: Option<Rows>,
    groups: usize,
}

impl GroupKeys {
    pub fn new(key_fields: &[FieldRef]) -> Result<Self> {
        if key_fields.is_empty() {
            return Ok(Self {
                converter: None,
                index: HashMap::new(),
                keys: None,
                groups: 0,
            });
        }
        let converter = RowConverter::new(
            key_fields
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        let keys = converter.empty_rows(0, 0);
        Ok(Self {
            converter: Some(converter),
            index: HashMap::new(),
            keys: Some(keys),
            groups: 0,
        })
    }

    /// Number of groups seen.
    pub fn len(&self) -> usize {
        self.groups
    }

    pub fn is_empty(&self) -> bool {
        self.groups == 0
    }

    /// Group index of every row; `new_groups` receives how many groups were created.
    pub fn intern(
        &mut self,
        columns: &[ArrayRef],
        num_rows: usize,
        out: &mut Vec<usize>,
    ) -> Result<usize> {
        out.clear();
        let before = self.groups;
        let Some(converter) = &self.converter else {
            if self.groups == 0 {
                self.groups = 1;
            }
            out.resize(num_rows, 0);
            return Ok(self.groups - before);
        };
        let rows = converter.convert_columns(columns)?;
        let keys = self.keys.as_mut().expect("keys exist with a converter");
        for row in rows.iter() {
            let bytes = row.as_ref();
            let group = match self.index.get(bytes) {
                Some(g) => *g,
                None => {
                    let g = self.groups;
                    self.index.insert(bytes.into(), g);
                    keys.push(row);
                    self.groups += 1;
                    g
                }
            };
            out.push(group);
        }
        Ok(self.groups - before)
    }

    /// Registers a key given in row format (restoring a snapshot).
    pub fn intern_row_bytes(&mut self, bytes: &[u8]) -> usize {
        let Some(converter) = &self.converter else {
            self.groups = 1;
            return 0;
        };
        if let Some(g) = self.index.get(bytes) {
            return *g;
        }
        let parser = converter.parser();
        let keys = self.keys.as_mut().expect("keys exist with a converter");
        keys.push(parser.parse(bytes));
        self.index.insert(bytes.into(), self.groups);
        self.groups += 1;
        self.groups - 1
    }

    /// The key of `group` in row format (empty for a global aggregate).
    pub fn row_bytes(&self, group: usize) -> &[u8] {
        match &self.keys {
            Some(keys) => keys.row(group).data(),
            None => &[],
        }
    }

    /// The key columns of `groups`, in that order.
    pub fn key_columns(&self, groups: &[usize]) -> Result<Vec<ArrayRef>> {
        match (&self.converter, &self.keys) {
            (Some(converter), Some(keys)) => {
                Ok(converter.convert_rows(groups.iter().map(|&g| keys.row(g)))?)
            }
            _ => Ok(Vec::new()),
        }
    }
}

/// Fields of the group-by columns: the first `n` fields of the aggregate's schema.
pub fn key_fields(schema: &SchemaRef, n: usize) -> Vec<FieldRef> {
    schema.fields().iter().take(n).cloned().collect()
}
