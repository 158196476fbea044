//! What `cut` tells its users, as data the CLI prints as tables or JSON: the footprint analysis
//! that inspection and pruning share, inspection summaries, prune reports and benchmark lines.

pub mod bench;
pub mod footprint;
pub mod inspect;
pub mod int8;
pub mod prune;
pub mod split;
pub mod table;
