//! [`PolicyKeys`]: what a store learns about a layer's policies when the layer is built.

use super::MAX_POLICIES;

/// The policies of a layer as its store sees them at build time ([`RateLimitStore::check_policies`]): their
/// names, in check order, and which of them key requests the same way (so that one request's states share one key).
///
/// [`RateLimitStore::check_policies`]: super::RateLimitStore::check_policies
#[derive(Clone, Copy, Debug)]
pub struct PolicyKeys<'a> {
    names: [&'a str; MAX_POLICIES],
    /// For each policy, the index of the first policy that keys requests the same way.
    groups: [usize; MAX_POLICIES],
    len: usize,
}

impl<'a> PolicyKeys<'a> {
    /// The policies `names` (at most [`MAX_POLICIES`]; extra ones are ignored), where `same_key(i, j)` says
    /// whether policies `i` and `j` key every request the same way.
    pub fn new(names: &[&'a str], same_key: impl Fn(usize, usize) -> bool) -> Self {
        let mut keys = Self {
            names: [""; MAX_POLICIES],
            groups: [0; MAX_POLICIES],
            len: names.len().min(MAX_POLICIES),
        };
        for (i, name) in names.iter().take(MAX_POLICIES).enumerate() {
            keys.names[i] = name;
            keys.groups[i] = (0..i).find(|&j| same_key(j, i)).unwrap_or(i);
        }
        keys
    }

    /// The policies' names, in check order.
    pub fn names(&self) -> &[&'a str] {
        &self.names[..self.len]
    }

    /// The first two policies (by name) that key requests differently, or `None` when every policy keys a
    /// request the same way.
    pub fn keyed_differently(&self) -> Option<(&'a str, &'a str)> {
        (1..self.len)
            .find(|&i| self.groups[i] != 0)
            .map(|i| (self.names[0], self.names[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_policy_keyed_differently() {
        let one = PolicyKeys::new(&["burst"], |_, _| false);
        assert_eq!(one.keyed_differently(), None);
        assert_eq!(one.names(), ["burst"]);
        let same = PolicyKeys::new(&["burst", "daily"], |_, _| true);
        assert_eq!(same.keyed_differently(), None);
        // "key" keys by API key, the others by address.
        let by = ["ip", "ip", "key"];
        let mixed = PolicyKeys::new(&["burst", "daily", "per-key"], |i, j| by[i] == by[j]);
        assert_eq!(mixed.keyed_differently(), Some(("burst", "per-key")));
    }
}
