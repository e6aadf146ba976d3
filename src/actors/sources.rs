//! Connections counted by their source address: a listener takes a [`SourceSlot`] for each
//! connection it serves and refuses the connection when its address already holds `most`, so
//! that one host (a client that opens connections and never closes them, or a burst of
//! sockets that never finish a handshake) cannot take every slot of a node's listener from
//! the others. Used by the node port for connections in their TLS handshake
//! (`limits.max_handshakes_per_source`) and by the HTTP endpoints for every connection they
//! serve (`limits.http_max_connections_per_source`).
//!
//! Clients behind one proxy or NAT share an address: the limit is then theirs together, and
//! the operator raises it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The connections each source address holds, at most `most` each.
pub struct PerSource {
    most: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's hold on its address's count, given back when dropped.
pub struct SourceSlot {
    sources: Arc<PerSource>,
    ip: IpAddr,
}

impl PerSource {
    pub fn new(most: usize) -> Arc<PerSource> {
        Arc::new(PerSource {
            most,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`; `None` if that address holds `most` already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let mut held = self.held.lock().expect("per-source lock");
        let count = held.entry(ip).or_insert(0);
        if *count >= self.most {
            if *count == 0 {
                held.remove(&ip);
            }
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self.sources.held.lock().expect("per-source lock");
        if let Some(count) = held.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address gets `most` slots, the next is refused, one given back makes room; other
    /// addresses are counted apart; an address that holds none leaves no entry behind.
    #[test]
    fn an_address_holds_at_most_its_slots_and_gets_them_back() {
        let sources = PerSource::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = sources.take(a).expect("first");
        let second = sources.take(a).expect("second");
        assert!(sources.take(a).is_none(), "a third from one address");
        let other = sources.take(b).expect("another address");
        drop(first);
        let again = sources.take(a).expect("a slot given back");
        assert_eq!(sources.held.lock().unwrap().get(&a), Some(&2));
        drop((second, again, other));
        assert!(sources.held.lock().unwrap().is_empty());
        // No slot at all: refused, and nothing kept for the address.
        let none = PerSource::new(0);
        assert!(none.take(a).is_none());
        assert!(none.held.lock().unwrap().is_empty());
    }
}
