use std::borrow::Cow;

/// A configuration value was rejected by a layer's `builder().build()`.
///
/// It names the field and says what is wrong with the value, so the message points at the setting to fix:
/// `invalid configuration: max_queue_wait: must be greater than zero (got 0ns)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    field: &'static str,
    reason: Cow<'static, str>,
}

impl ConfigError {
    /// A new error for `field`, with a sentence saying what is wrong (include the bad value).
    pub fn new(field: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The name of the rejected field, as the builder method that sets it is named.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with the value.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field() {
        let e = ConfigError::new("max_queue", "must be at most 1000000 (got 5000000)");
        assert_eq!(e.field(), "max_queue");
        assert_eq!(
            e.to_string(),
            "invalid configuration: max_queue: must be at most 1000000 (got 5000000)"
        );
    }
}
