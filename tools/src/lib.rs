//! Shared by the tools that drive eventline from outside (`eventline-bench`, `eventline-chaos`):
//! the system under test as processes of its own.

pub mod stack;
