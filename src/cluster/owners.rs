//! Which instances probe a node: its *owners*, the `probe_owners` live members ranked first for
//! it by rendezvous (highest random weight) hashing. Pure: every instance that sees the same
//! live members computes the same owners, with no message exchanged, and a member joining or
//! dying moves only the nodes it ranks first for (about 1/N of them), so probes per node stay
//! at `probe_owners` per interval whatever the cluster's size.
//!
//! The score is the first 8 bytes of SHA-256 over the member's name and the node's key: fixed
//! across builds and versions, so an old and a new binary (an upgrade) agree.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// The owners of every node for the live members last seen, computed once per node for each
/// membership.
#[derive(Debug)]
pub struct Owners {
    /// How many owners each node has.
    k: usize,
    /// The live member names the cache is for, sorted.
    members: Vec<String>,
    cache: HashMap<String, Vec<String>>,
}

impl Owners {
    /// No members yet; `k` owners per node.
    pub fn new(k: usize) -> Owners {
        Owners {
            k,
            members: Vec::new(),
            cache: HashMap::new(),
        }
    }

    /// Sets the live member names (this instance's included); a change empties the cache.
    pub fn set_members(&mut self, mut names: Vec<String>) {
        names.sort_unstable();
        names.dedup();
        if names != self.members {
            self.members = names;
            self.cache.clear();
        }
    }

    /// The owners of the node `key`.
    pub fn of(&mut self, key: &str) -> &[String] {
        if !self.cache.contains_key(key) {
            let members: Vec<&str> = self.members.iter().map(String::as_str).collect();
            let found = owners(&members, key, self.k)
                .into_iter()
                .map(str::to_owned)
                .collect();
            self.cache.insert(key.to_owned(), found);
        }
        self.cache.get(key).map_or(&[], Vec::as_slice)
    }

    /// Forgets nodes no longer in service once the cache holds more than twice `nodes`.
    pub fn trim(&mut self, nodes: usize) {
        if self.cache.len() > 2 * nodes + 16 {
            self.cache.clear();
        }
    }
}

/// The owners of the node `key` (`service/address`) among the live member names `members`:
/// the `k` highest scores, best first (all of them when there are `k` or fewer). A name listed
/// twice (two runs of one instance during an upgrade) counts once.
pub fn owners<'a>(members: &[&'a str], key: &str, k: usize) -> Vec<&'a str> {
    let mut ranked: Vec<(u64, &str)> = members.iter().map(|m| (score(m, key), *m)).collect();
    // Highest score first; the name breaks a tie the same way everywhere.
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().take(k).map(|(_, m)| m).collect()
}

/// The rendezvous score of `member` for the node `key`.
fn score(member: &str, key: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update(member.as_bytes());
    // A separator no name holds, so ("ab", "c") and ("a", "bc") differ.
    hash.update([0]);
    hash.update(key.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("web/10.0.0.{i}:80")).collect()
    }

    #[test]
    fn the_cache_follows_the_members() {
        let mut o = Owners::new(1);
        o.set_members(vec!["lb2".to_owned(), "lb1".to_owned()]);
        let first = o.of("web/n1:80").to_vec();
        assert_eq!(first, owners(&["lb1", "lb2"], "web/n1:80", 1));
        let other = if first[0] == "lb1" { "lb2" } else { "lb1" };
        o.set_members(vec![other.to_owned()]);
        assert_eq!(o.of("web/n1:80"), [other.to_owned()]);
    }

    #[test]
    fn every_instance_computes_the_same_owners_in_any_member_order() {
        let a = owners(&["lb1", "lb2", "lb3", "lb4"], "web/n1:80", 2);
        let b = owners(&["lb4", "lb3", "lb1", "lb2"], "web/n1:80", 2);
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        assert_ne!(a[0], a[1]);
    }

    #[test]
    fn fewer_members_than_owners_makes_every_member_an_owner() {
        let mut got = owners(&["lb1", "lb2"], "web/n1:80", 3);
        got.sort_unstable();
        assert_eq!(got, ["lb1", "lb2"]);
        assert_eq!(owners(&["lb1"], "web/n1:80", 2), ["lb1"]);
        assert!(owners(&[], "web/n1:80", 2).is_empty());
        assert_eq!(owners(&["lb1", "lb1", "lb2"], "k", 3).len(), 2);
    }

    #[test]
    fn probes_spread_evenly_over_the_members() {
        let members = ["lb1", "lb2", "lb3", "lb4", "lb5"];
        let mut load = [0usize; 5];
        for key in keys(1_000) {
            for owner in owners(&members, &key, 2) {
                let i = members.iter().position(|m| *m == owner).expect("a member");
                load[i] += 1;
            }
        }
        // 2,000 ownerships over 5 members: 400 each, give or take.
        for (member, n) in members.iter().zip(load) {
            assert!((330..=470).contains(&n), "{member} owns {n} of 2,000");
        }
    }

    #[test]
    fn a_member_leaving_moves_only_the_nodes_it_owned() {
        let before = ["lb1", "lb2", "lb3", "lb4"];
        let after = ["lb1", "lb2", "lb4"];
        for key in keys(500) {
            let old = owners(&before, &key, 2);
            let new = owners(&after, &key, 2);
            if !old.contains(&"lb3") {
                assert_eq!(old, new, "{key} changed owners though lb3 did not own it");
            } else {
                // The surviving owner stays; one new owner joins it.
                let kept: Vec<&str> = old.iter().copied().filter(|m| *m != "lb3").collect();
                assert!(
                    kept.iter().all(|k| new.contains(k)),
                    "{key}: {old:?} -> {new:?}"
                );
            }
        }
    }
}
