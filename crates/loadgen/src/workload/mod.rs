//! Workloads: traces and function metadata (the Ilúvatar CSV formats), their generation
//! (synthetic distributions, the Azure 2019 dataset) and the seeded draws they use.

pub mod csv;
pub mod dist;
pub mod generate;
pub mod trace;
