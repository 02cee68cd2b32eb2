//! The accessors every middleware service of the workspace has.

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
