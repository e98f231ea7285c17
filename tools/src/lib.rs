//! Shared by the tools that drive eventline from outside (`eventline-bench`, `eventline-chaos`):
//! the system under test as processes of its own, and dependencies of the run's own to inject
//! faults into.

pub mod sandbox;
pub mod stack;
