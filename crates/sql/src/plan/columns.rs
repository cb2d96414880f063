//! The columns of the plan contract: the window and event-time columns the
//! front end adds to a windowed query and the engine fills, and how a
//! field is marked as one (its [`WINDOW_ROLE`]). The engine and the sinks
//! read these; the planning that adds them is in `crate::windowing`.

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};

/// Start of the window a result row belongs to (inclusive).
pub const WINDOW_START: &str = "_window_start";
/// End of the window a result row belongs to (exclusive).
pub const WINDOW_END: &str = "_window_end";

/// The type of the window columns: milliseconds since the epoch, UTC.
pub fn window_column_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// Field metadata key marking a window column; its value is `start` or `end`.
pub const WINDOW_ROLE: &str = "velostream.window";

/// The event-time system column, filled from the event-time field (or
/// arrival time) by the same operator that assigns windows.
pub const EVENT_TIME: &str = "_event_time";

/// `Some("start")`/`Some("end")` for a window column, `Some("event_time")`
/// for `_event_time`.
pub fn window_role(field: &Field) -> Option<&str> {
    field.metadata().get(WINDOW_ROLE).map(String::as_str)
}
