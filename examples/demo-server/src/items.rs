//! The demo's data: a catalogue of items (its JSON list is about 100 KiB). `crate::cache` serves the list and adds
//! to it; `crate::batch` serves single items from SQLite.

use serde::Serialize;
use std::sync::{Arc, RwLock};

/// One catalogue entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Item {
    /// Identifier, from 1.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// A sentence or two.
    pub description: String,
    /// Price in cents.
    pub price_cents: u64,
    /// Free-form tags.
    pub tags: Vec<String>,
}

/// Where added items are also written, so every route sees them (the SQLite database behind
/// `/api/items/{id}`).
pub trait Persist: Send + Sync + 'static {
    /// Writes the item; errors are logged by the implementation.
    fn save(&self, item: Item) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

/// A change to the catalogue, pushed to WebSocket subscribers (`crate::ws`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ItemUpdate {
    /// An item was added.
    Created {
        /// The new item.
        item: Item,
    },
    /// An item's price changed.
    PriceChanged {
        /// The item.
        id: u64,
        /// The new price, in cents.
        price_cents: u64,
    },
}

impl ItemUpdate {
    /// The item the update is about (the key of latest-wins batching).
    pub fn item_id(&self) -> u64 {
        match self {
            ItemUpdate::Created { item } => item.id,
            ItemUpdate::PriceChanged { id, .. } => *id,
        }
    }
}

/// How many updates a subscriber may lag behind before it misses some (it then skips to the newest).
pub const UPDATES_CAPACITY: usize = 4096;

/// The item store shared by the handlers: the list in memory, written through to a [`Persist`] if one is set, and
/// a broadcast of every change.
#[derive(Clone)]
pub struct Items(
    Arc<RwLock<Vec<Item>>>,
    Option<Arc<dyn Persist>>,
    tokio::sync::broadcast::Sender<ItemUpdate>,
);

impl std::fmt::Debug for Items {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Items")
            .field("persisted", &self.1.is_some())
            .finish_non_exhaustive()
    }
}

/// How many items the demo starts with; their JSON list is about 100 KiB.
pub const SEED_ITEMS: u64 = 590;

const WORDS: &[&str] = &[
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "indigo",
    "juniper", "kelp", "lumen", "meadow", "nickel", "onyx", "prairie", "quartz", "river", "sierra",
    "tundra",
];

impl Items {
    /// The deterministic seed catalogue.
    pub fn seeded() -> Self {
        let items = (1..=SEED_ITEMS).map(seed_item).collect();
        Items(
            Arc::new(RwLock::new(items)),
            None,
            tokio::sync::broadcast::channel(UPDATES_CAPACITY).0,
        )
    }

    /// Writes added items through to `persist` too.
    #[must_use]
    pub fn persisted_in(mut self, persist: Arc<dyn Persist>) -> Self {
        self.1 = Some(persist);
        self
    }

    /// A copy of every item.
    pub fn all(&self) -> Vec<Item> {
        self.0.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// Adds an item with the next id, writes it through, and returns it.
    pub async fn add(
        &self,
        name: String,
        description: String,
        price_cents: u64,
        tags: Vec<String>,
    ) -> Item {
        let item = {
            let mut items = self
                .0
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let id = items.iter().map(|item| item.id).max().unwrap_or(0) + 1;
            let item = Item {
                id,
                name,
                description,
                price_cents,
                tags,
            };
            items.push(item.clone());
            item
        };
        if let Some(persist) = &self.1 {
            persist.save(item.clone()).await;
        }
        // No subscriber is not an error.
        let _ = self.2.send(ItemUpdate::Created { item: item.clone() });
        item
    }

    /// Sets an item's price, writes it through and tells subscribers; `None` if there is no such item.
    pub async fn set_price(&self, id: u64, price_cents: u64) -> Option<Item> {
        let item = {
            let mut items = self
                .0
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let item = items.iter_mut().find(|item| item.id == id)?;
            item.price_cents = price_cents;
            item.clone()
        };
        if let Some(persist) = &self.1 {
            persist.save(item.clone()).await;
        }
        let _ = self.2.send(ItemUpdate::PriceChanged { id, price_cents });
        Some(item)
    }

    /// A subscription to every later change.
    pub fn updates(&self) -> tokio::sync::broadcast::Receiver<ItemUpdate> {
        self.2.subscribe()
    }

    /// The item with this id.
    pub fn get(&self, id: u64) -> Option<Item> {
        let items = self.0.read().ok()?;
        items.iter().find(|item| item.id == id).cloned()
    }
}

fn seed_item(id: u64) -> Item {
    let w = |k: u64| WORDS[((id * 7 + k * 13) % WORDS.len() as u64) as usize];
    Item {
        id,
        name: format!("{} {} {id}", w(1), w(2)),
        description: format!(
            "A {} {} made from {} and {}, shipped from the {} warehouse.",
            w(3),
            w(4),
            w(5),
            w(6),
            w(7)
        ),
        price_cents: 100 + (id * 37) % 9_900,
        tags: vec![w(8).to_owned(), w(9).to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_is_about_100_kib() {
        let json = serde_json::to_vec(&Items::seeded().all()).unwrap();
        assert!((95_000..115_000).contains(&json.len()), "{}", json.len());
    }
}
