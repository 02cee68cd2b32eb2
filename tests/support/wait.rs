//! [`wait_until`]: polls an asynchronous condition until it holds, for tests over real servers (real time, with a
//! generous bound rather than a fixed sleep).

use std::time::{Duration, Instant};

/// Polls `check` every 20 ms until it returns `true`; fails the test naming `what` if it still does not after
/// `within`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut polls = 0;
/// tower_kit_test_support::wait_until("the third poll", std::time::Duration::from_secs(5), async || {
///     polls += 1;
///     polls == 3
/// })
/// .await;
/// assert_eq!(polls, 3);
/// # }
/// ```
pub async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
