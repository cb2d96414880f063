//! Files: `file_source` reads JSON Lines, JSON arrays and CSV; `file_sink`
//! writes JSON Lines or CSV. Standard input and output reuse the same
//! framing and encoding.

pub mod committed;
pub mod connector;
pub mod decode_pool;
pub mod framing;
pub mod json_array;
pub mod reader;
pub mod stdout;
