//! [`paused_runtime`]: a current-thread runtime whose clock starts paused, for tests that must run a runtime of
//! their own (a thread-local metrics recorder must be installed before the runtime runs the code under test).

/// A current-thread tokio runtime with every driver on and its clock paused: timers fire as soon as every task
/// waits, so time-dependent logic runs without sleeping.
///
/// ```
/// let rt = tower_kit_test_support::paused_runtime();
/// let slept = rt.block_on(async {
///     let start = tokio::time::Instant::now();
///     tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
///     start.elapsed()
/// });
/// assert!(slept >= std::time::Duration::from_secs(3600));
/// ```
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("could not build a paused tokio runtime: {e}"))
}
