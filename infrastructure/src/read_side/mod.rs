//! The read side in PostgreSQL: the tables' columns (`columns`), the `call_views` projection that
//! folds events into them (`projection`, writing through `writer`), replays that rebuild them
//! from the events (`replay`), the queries analysts' requests run (`queries`), and a call's
//! aggregate replayed for auditors (`call_state`).

pub mod call_state;
pub mod columns;
pub mod projection;
pub mod queries;
pub mod replay;
mod writer;

pub use projection::{CallViewsProjection, CALL_VIEWS};
pub use replay::{fold_store, rebuild_all, replay, ReplayError, ReplayReport};
