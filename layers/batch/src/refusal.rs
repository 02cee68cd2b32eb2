//! [`Refusal`]: what an [`on_refusal`](crate::BatchLayerBuilder::on_refusal) hook is told when the batcher refuses
//! a call.

use std::{borrow::Cow, sync::Arc};

/// Why the batcher refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
    /// `max_queued` items were already waiting for dispatch (the call fails with
    /// [`BatchError::Overloaded`](crate::BatchError::Overloaded)).
    QueueFull,
}

impl RefusalReason {
    /// The reason as a label: `queue_full` (the same word the concurrency limit uses).
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusalReason::QueueFull => "queue_full",
        }
    }
}

tower_kit_core::display_as_str!(RefusalReason);

/// What an [`on_refusal`](crate::BatchLayerBuilder::on_refusal) hook is told about a refused call.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Refusal {
    /// Why the call was refused.
    pub reason: RefusalReason,
    /// The batcher's name (its `batcher` metric label).
    pub batcher: Cow<'static, str>,
    /// The batcher's `max_queued`.
    pub max_queued: usize,
}

/// The hook, shared by the batcher's callers.
pub(crate) type RefusalHook = Arc<dyn Fn(&Refusal) + Send + Sync>;
