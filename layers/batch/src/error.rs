use std::{fmt, sync::Arc};

/// Why a batched call did not produce the backend's result for its item.
///
/// Per-item failures that the backend reports itself are not errors here: make the backend's item type a
/// `Result` (`Vec<Result<T, ItemError>>`), and each caller gets its own item's `Result` as its response.
#[non_exhaustive]
pub enum BatchError<E> {
    /// More than `max_queued` items were waiting for dispatch; the call was refused at once, nothing was queued.
    Overloaded,
    /// The batcher stopped (its runtime shut down, or its worker was dropped) before this item got an answer.
    Cancelled,
    /// The backend panicked in `poll_ready`, `call` or its future while serving this item's batch. Only the callers
    /// in that batch see this; the batcher keeps serving.
    BackendPanicked,
    /// The backend answered the batch but gave no result for this item: its `Vec` was too short (ordered mode) or
    /// its map had no entry for this item's key (keyed mode).
    MissingResult,
    /// The backend failed the whole batch; every caller in it shares the same error.
    Backend(Arc<E>),
}

impl<E> BatchError<E> {
    /// Whether the call was refused because the queue was full.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, BatchError::Overloaded)
    }

    /// Whether the backend gave no result for this item.
    pub fn is_missing(&self) -> bool {
        matches!(self, BatchError::MissingResult)
    }

    /// The backend's error, if the batch failed with one.
    pub fn backend(&self) -> Option<&E> {
        match self {
            BatchError::Backend(e) => Some(e),
            _ => None,
        }
    }
}

impl<E> Clone for BatchError<E> {
    fn clone(&self) -> Self {
        match self {
            BatchError::Overloaded => BatchError::Overloaded,
            BatchError::Cancelled => BatchError::Cancelled,
            BatchError::BackendPanicked => BatchError::BackendPanicked,
            BatchError::MissingResult => BatchError::MissingResult,
            BatchError::Backend(e) => BatchError::Backend(Arc::clone(e)),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for BatchError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Overloaded => f.write_str("Overloaded"),
            BatchError::Cancelled => f.write_str("Cancelled"),
            BatchError::BackendPanicked => f.write_str("BackendPanicked"),
            BatchError::MissingResult => f.write_str("MissingResult"),
            BatchError::Backend(e) => f.debug_tuple("Backend").field(e).finish(),
        }
    }
}

impl<E: fmt::Display> fmt::Display for BatchError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Overloaded => f.write_str("batch queue is full"),
            BatchError::Cancelled => f.write_str("batcher stopped before answering"),
            BatchError::BackendPanicked => f.write_str("batch backend panicked"),
            BatchError::MissingResult => {
                f.write_str("batch backend returned no result for this item")
            }
            BatchError::Backend(e) => write!(f, "batch backend failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for BatchError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BatchError::Backend(e) => Some(&**e),
            _ => None,
        }
    }
}

impl<E> PartialEq for BatchError<E> {
    /// Equal when of the same kind; two `Backend` errors are equal when they share the same batch's error.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (BatchError::Backend(a), BatchError::Backend(b)) => Arc::ptr_eq(a, b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[derive(Debug)]
    struct Db;
    impl fmt::Display for Db {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("db down")
        }
    }
    impl std::error::Error for Db {}

    #[test]
    fn display_source_and_helpers() {
        let e: BatchError<Db> = BatchError::Backend(Arc::new(Db));
        assert_eq!(e.to_string(), "batch backend failed: db down");
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("db down")
        );
        assert!(e.backend().is_some());
        assert_eq!(e.clone(), e);
        assert_ne!(
            e,
            BatchError::Backend(Arc::new(Db)),
            "a different batch's error"
        );
        let o: BatchError<Db> = BatchError::Overloaded;
        assert!(o.is_overloaded() && !o.is_missing() && o.source().is_none());
        assert_eq!(
            format!("{:?}", BatchError::<Db>::MissingResult),
            "MissingResult"
        );
    }
}
