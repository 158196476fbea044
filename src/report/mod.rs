//! What `cut` tells its users: inspection summaries and (later) pruning reports, as data that the
//! CLI prints as tables or JSON.

pub mod bench;
pub mod footprint;
pub mod inspect;
pub mod prune;
pub mod table;
