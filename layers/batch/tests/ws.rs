//! The message batcher on tokio's paused clock, over in-memory sinks: flush on size and on interval, latest wins,
//! the queue bound and each overflow policy, 1,000 stalled clients.
#![cfg(all(feature = "ws", feature = "axum"))]

use axum::extract::ws::Message;
use futures_util::Sink;
use std::{convert::Infallible, num::NonZeroUsize, pin::Pin, time::Duration};
use tokio::{sync::mpsc, time::Instant};
use tower_kit_batch::ws::{Ended, MessageBatcher, Overflow, SendError};

type Update = (u64, u64);

fn encode(batch: Vec<Update>) -> Message {
    Message::Text(serde_json::to_string(&batch).unwrap().into())
}

type BoxSink = Pin<Box<dyn Sink<Message, Error = Infallible> + Send>>;

/// A sink that records each frame with the (paused) time it was written.
fn recording() -> (BoxSink, mpsc::UnboundedReceiver<(Duration, Vec<Update>)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let sink = futures_util::sink::unfold(tx, move |tx, m: Message| async move {
        if let Message::Text(t) = m {
            let batch: Vec<Update> = serde_json::from_str(t.as_str()).unwrap();
            tx.send((start.elapsed(), batch)).unwrap();
        }
        Ok::<_, Infallible>(tx)
    });
    (Box::pin(sink), rx)
}

/// A client that never reads: the first write never completes.
fn stalled() -> BoxSink {
    Box::pin(futures_util::sink::unfold((), |(), _m: Message| {
        std::future::pending::<Result<(), Infallible>>()
    }))
}

fn n(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_batch_flushes_when_it_reaches_max_messages() {
    let batcher = MessageBatcher::builder(encode)
        .max_messages(n(3))
        .max_delay(Duration::from_millis(100))
        .build()
        .unwrap();
    let (sink, mut frames) = recording();
    let (sender, driver) = batcher.attach(sink);
    let driver = tokio::spawn(driver);
    for i in 0..7 {
        sender.send((i, i)).unwrap();
    }
    assert_eq!(
        frames.recv().await.unwrap(),
        (Duration::ZERO, vec![(0, 0), (1, 1), (2, 2)])
    );
    assert_eq!(
        frames.recv().await.unwrap(),
        (Duration::ZERO, vec![(3, 3), (4, 4), (5, 5)])
    );
    // The seventh waits for the interval.
    assert_eq!(
        frames.recv().await.unwrap(),
        (Duration::from_millis(100), vec![(6, 6)])
    );
    let stats = sender.stats();
    assert_eq!((stats.frames, stats.messages, stats.queued), (3, 7, 0));
    drop(sender);
    assert_eq!(driver.await.unwrap(), Ok(Ended::SendersDropped));
}

#[tokio::test(start_paused = true)]
async fn a_batch_flushes_on_bytes() {
    let batcher = MessageBatcher::builder(encode)
        .max_bytes(100)
        .weigh(|_: &Update| 40)
        .build()
        .unwrap();
    let (sink, mut frames) = recording();
    let (sender, driver) = batcher.attach(sink);
    tokio::spawn(driver);
    for i in 0..3 {
        sender.send((i, 0)).unwrap();
    }
    // 120 bytes pending >= 100: a batch of what fits (two), then the third after the interval.
    assert_eq!(
        frames.recv().await.unwrap(),
        (Duration::ZERO, vec![(0, 0), (1, 0)])
    );
    assert_eq!(
        frames.recv().await.unwrap(),
        (Duration::from_millis(100), vec![(2, 0)])
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_flushes_when_its_oldest_message_has_waited_max_delay() {
    let batcher = MessageBatcher::new(encode); // 10 messages / 100 ms
    let (sink, mut frames) = recording();
    let (sender, driver) = batcher.attach(sink);
    tokio::spawn(driver);
    sender.send((1, 10)).unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    sender.send((2, 20)).unwrap();
    assert!(frames.try_recv().is_err());
    // Measured from the oldest message, not the newest.
    assert_eq!(
        frames.recv().await.unwrap(),
        (Duration::from_millis(100), vec![(1, 10), (2, 20)])
    );
    sender.send((3, 30)).unwrap();
    assert_eq!(
        frames.recv().await.unwrap(),
        (Duration::from_millis(200), vec![(3, 30)])
    );
}

#[tokio::test(start_paused = true)]
async fn latest_wins_keeps_only_the_newest_message_per_key() {
    let batcher = MessageBatcher::builder(encode)
        .latest_wins(|(id, _): &Update| *id)
        .build()
        .unwrap();
    let (sink, mut frames) = recording();
    let (sender, driver) = batcher.attach(sink);
    tokio::spawn(driver);
    for price in 1..=50 {
        sender.send((7, price)).unwrap();
        sender.send((8, price * 2)).unwrap();
    }
    sender.send((9, 1)).unwrap();
    let (at, batch) = frames.recv().await.unwrap();
    assert_eq!(at, Duration::from_millis(100));
    // Each key once, in the order it first became pending, with its newest value.
    assert_eq!(batch, [(7, 50), (8, 100), (9, 1)]);
    let stats = sender.stats();
    assert_eq!((stats.replaced, stats.messages, stats.frames), (98, 3, 1));
}

#[tokio::test(start_paused = true)]
async fn frames_sent_as_they_are_go_ahead_of_the_next_batch() {
    let batcher = MessageBatcher::new(encode);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink = futures_util::sink::unfold(tx, |tx, m: Message| async move {
        tx.send(m).unwrap();
        Ok::<_, Infallible>(tx)
    });
    let (sender, driver) = batcher.attach(Box::pin(sink));
    tokio::spawn(driver);
    sender.send((1, 1)).unwrap();
    sender.send_frame(Message::Text("echo".into())).unwrap();
    assert_eq!(rx.recv().await.unwrap(), Message::Text("echo".into()));
    assert_eq!(rx.recv().await.unwrap(), Message::Text("[[1,1]]".into()));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_client_drops_the_oldest_beyond_the_bound() {
    let batcher = MessageBatcher::builder(encode)
        .max_queued(5)
        .overflow(Overflow::DropOldest)
        .build()
        .unwrap();
    let (sender, driver) = batcher.attach(stalled());
    tokio::spawn(driver);
    // The first batch is taken by the stalled write after the interval; the rest queue.
    sender.send((0, 0)).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    for i in 1..=100 {
        sender.send((i, i)).unwrap();
    }
    let stats = sender.stats();
    assert_eq!((stats.queued, stats.dropped, stats.frames), (5, 95, 0));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_client_refuses_the_newest_beyond_the_bound() {
    let batcher = MessageBatcher::builder(encode)
        .max_queued(5)
        .overflow(Overflow::DropNewest)
        .build()
        .unwrap();
    let (sender, driver) = batcher.attach(stalled());
    tokio::spawn(driver);
    sender.send((0, 0)).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    for i in 1..=5 {
        sender.send((i, i)).unwrap();
    }
    assert_eq!(sender.send((6, 6)), Err(SendError::Full((6, 6))));
    assert_eq!(
        sender.send_frame(Message::Text("x".into())),
        Err(SendError::Full(Message::Text("x".into())))
    );
    let stats = sender.stats();
    assert_eq!((stats.queued, stats.dropped), (5, 1));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_client_is_closed_with_the_chosen_code() {
    let batcher = MessageBatcher::builder(encode)
        .max_queued(5)
        .overflow(Overflow::Close { code: 1008 })
        .close_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (sender, driver) = batcher.attach(stalled());
    let driver = tokio::spawn(driver);
    sender.send((0, 0)).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    for i in 1..=5 {
        sender.send((i, i)).unwrap();
    }
    let start = Instant::now();
    assert_eq!(sender.send((6, 6)), Err(SendError::Full((6, 6))));
    assert!(sender.is_closed());
    assert_eq!(sender.send((7, 7)), Err(SendError::Closed((7, 7))));
    // The stalled write is abandoned; the close frame is tried for the close timeout.
    assert_eq!(driver.await.unwrap(), Ok(Ended::Overflowed { code: 1008 }));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    // The queue was freed when the driver ended.
    assert_eq!(sender.stats().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn the_close_frame_reaches_a_client_that_is_slow_but_not_stalled() {
    // A sink whose writes complete only when the test lets them.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let g = gate.clone();
    let sink = futures_util::sink::unfold(tx, move |tx, m: Message| {
        let g = g.clone();
        async move {
            g.acquire().await.unwrap().forget();
            tx.send(m).unwrap();
            Ok::<_, Infallible>(tx)
        }
    });
    let batcher = MessageBatcher::builder(encode)
        .max_queued(3)
        .overflow(Overflow::Close { code: 4008 })
        .build()
        .unwrap();
    let (sender, driver) = batcher.attach(Box::pin(sink));
    let driver = tokio::spawn(driver);
    sender.send((0, 0)).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    for i in 1..=4 {
        let _ = sender.send((i, i));
    }
    gate.add_permits(10);
    assert_eq!(driver.await.unwrap(), Ok(Ended::Overflowed { code: 4008 }));
    // The write that was in progress completes first (the sink had started it), then the close frame.
    assert_eq!(rx.recv().await.unwrap(), Message::Text("[[0,0]]".into()));
    match rx.recv().await.unwrap() {
        Message::Close(Some(frame)) => assert_eq!(frame.code, 4008),
        other => panic!("expected the close frame, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_stalled_clients_each_hold_at_most_max_queued() {
    let batcher = MessageBatcher::builder(encode)
        .max_queued(100)
        .latest_wins(|(id, _): &Update| *id)
        .build()
        .unwrap();
    let mut senders = Vec::new();
    for _ in 0..1000 {
        let (sender, driver) = batcher.attach(stalled());
        tokio::spawn(driver);
        senders.push(sender);
    }
    // 3,000 distinct updates pushed to every client.
    for round in 0..3u64 {
        for i in 0..1000u64 {
            for sender in &senders {
                let _ = sender.send((round * 1000 + i, i));
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for sender in &senders {
        let stats = sender.stats();
        assert!(stats.queued <= 100, "{stats:?}");
        // Ten in the batch stuck in the stalled write, 100 queued, the rest dropped.
        assert_eq!(stats.dropped + stats.queued as u64 + 10, 3_000, "{stats:?}");
    }
}

#[test]
fn the_builder_names_the_bad_field() {
    let e = MessageBatcher::builder(encode)
        .max_queued(0)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "max_queued");
    let e = MessageBatcher::builder(encode)
        .overflow(Overflow::Close { code: 999 })
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "overflow");
    let e = MessageBatcher::builder(encode)
        .max_bytes(0)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "max_bytes");
}
