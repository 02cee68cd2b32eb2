//! Small macros every layer uses: the accessors of a middleware service, `Display` for label enums, the `exempt`
//! setter of a builder.

/// Defines `get_ref`, `get_mut` and `into_inner` on a middleware service whose wrapped service is the field
/// `inner` of type `S`. Used inside an `impl<S, ..> Service<S, ..>` block, so every layer's service has the same
/// three methods with the same documentation.
#[macro_export]
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// The inner service, unwrapped.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

/// Implements `Display` for a type with a `const fn as_str(self) -> &'static str` (the refusal reasons, whose
/// `as_str` is also their metric label), so the printed form and the label never differ.
#[macro_export]
macro_rules! display_as_str {
    ($ty:ty) => {
        impl ::core::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Defines the builder setter `exempt(predicate)` on a builder with a field `exempt` of type
/// [`Exempt`](crate::Exempt), with the documentation given (what an exempt request skips in that layer), so every
/// layer that refuses takes exemptions with the same signature. The calling crate depends on `http`.
#[macro_export]
macro_rules! exempt_setter {
    ($(#[$doc:meta])*) => {
        $(#[$doc])*
        pub fn exempt<F>(mut self, predicate: F) -> Self
        where
            F: Fn(&::http::request::Parts) -> bool + Send + Sync + 'static,
        {
            self.exempt = $crate::Exempt::new(predicate);
            self
        }
    };
}
