//! Integration tests of the timing layer: one test binary, one module per stack.

mod axum_stack;
mod hyper_stack;
mod service;
mod support;
mod tonic_stack;
