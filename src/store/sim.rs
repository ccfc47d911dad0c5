//! A simulated object store (in memory, deterministic) with the semantics the protocol relies
//! on (docs/contract.md, "OUT in an object store"): whole-object atomic puts, create-if-absent,
//! strong read-after-write and list-after-write, no rename and no directories. Failures are
//! injected at the k-th request: a plain failure (nothing happened), or a timeout whose write
//! was applied or not: the caller cannot tell which.

use super::objects::{ObjError, ObjResult, ObjectMeta, Objects, PutMode};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// What the k-th request does instead of answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Fault {
    /// Fails without effect (`Unavailable`, `maybe_applied: false`).
    Fail,
    /// Times out after the store applied the write (`Unavailable`, `maybe_applied: true`).
    TimeoutApplied,
    /// Times out before the store applied it (`Unavailable`, `maybe_applied: true`: the caller
    /// cannot tell this from `TimeoutApplied`).
    TimeoutLost,
    /// The process making the request is dead (`die_after`): nothing happens, and no answer
    /// reaches anyone.
    Dead,
}

#[derive(Clone, Default)]
struct State {
    objects: BTreeMap<String, Vec<u8>>,
    requests: u64,
    faults: BTreeMap<u64, Fault>,
    /// Requests by kind (`get`, `head`, `put_create`, `put_overwrite`, `delete`, `list`).
    counts: BTreeMap<&'static str, u64>,
    /// Another writer's create-if-absent, landing just before the request of that number.
    rivals: BTreeMap<u64, (String, Vec<u8>)>,
    /// When set, about one create-if-absent in four times out (applied or lost, decided by a
    /// hash of this seed and the request number): what the protocol must absorb.
    create_timeouts: Option<u64>,
    /// Writes (puts and deletes) answered so far.
    writes: u64,
    /// The process dies once this many writes have been answered: every later request fails
    /// until `revive` (crash exploration: the process dies between requests).
    die_at: Option<u64>,
    dead: bool,
}

/// The simulated store. Cheap to create; all state behind one mutex.
#[derive(Default)]
pub struct SimObjects {
    state: Mutex<State>,
}

impl SimObjects {
    pub fn new() -> SimObjects {
        SimObjects::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `k`-th request from now (1-based) meets `fault`.
    pub fn fail_request(&self, k: u64, fault: Fault) {
        let mut s = self.state();
        let at = s.requests + k;
        s.faults.insert(at, fault);
    }

    /// A store whose create-if-absent puts time out now and then, deterministically from
    /// `seed`: one in eight is applied and unanswered, one in eight lost and unanswered. Every
    /// other request answers. The orchestrator must behave exactly as on a healthy store
    /// (docs/contract.md, "A create-if-absent that timed out").
    pub fn with_create_timeouts(seed: u64) -> SimObjects {
        let sim = SimObjects::new();
        sim.state().create_timeouts = Some(seed);
        sim
    }

    /// An independent copy of the store in its current state (crash exploration forks one
    /// prefix per crash point).
    pub fn fork(&self) -> SimObjects {
        SimObjects {
            state: Mutex::new(self.state().clone()),
        }
    }

    /// The next `k` writes are answered, then the process that makes them is dead: every
    /// request fails (nothing more is applied) until `revive`. What the store applied stays:
    /// an answered put is durable.
    pub fn die_after(&self, k: u64) {
        let mut s = self.state();
        if k == 0 {
            s.dead = true;
        } else {
            s.die_at = Some(s.writes + k);
        }
    }

    /// A new process after a crash: requests are answered again.
    pub fn revive(&self) {
        let mut s = self.state();
        s.dead = false;
        s.die_at = None;
    }

    /// Writes answered so far.
    pub fn write_count(&self) -> u64 {
        self.state().writes
    }

    /// Another writer creates `key` (if absent) just before the `k`-th request from now.
    pub fn rival_create_at(&self, k: u64, key: &str, bytes: &[u8]) {
        let mut s = self.state();
        let at = s.requests + k;
        s.rivals.insert(at, (key.to_string(), bytes.to_vec()));
    }

    /// Requests served (or failed) so far, by kind.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.state().counts.clone()
    }

    /// Every object, by key (for checks).
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.state().objects.clone()
    }

    /// Counts the request and returns its fault, if one is planted at it.
    fn request(s: &mut State, kind: &'static str) -> Option<Fault> {
        s.requests += 1;
        if s.dead {
            return Some(Fault::Dead);
        }
        if kind.starts_with("put") || kind == "delete" {
            s.writes += 1;
            if s.die_at.is_some_and(|at| s.writes > at) {
                s.dead = true;
                return Some(Fault::Dead);
            }
        }
        if let Some((key, bytes)) = s.rivals.remove(&s.requests) {
            s.objects.entry(key).or_insert(bytes);
        }
        *s.counts.entry(kind).or_insert(0) += 1;
        let at = s.requests;
        s.faults.remove(&at)
    }
}

fn unavailable(maybe_applied: bool, at: u64) -> ObjError {
    ObjError::Unavailable {
        maybe_applied,
        detail: format!("injected at request {at}"),
    }
}

/// A read or listing that meets a fault: it never changed anything.
fn read_fault(fault: Option<Fault>, at: u64) -> ObjResult<()> {
    match fault {
        None => Ok(()),
        Some(_) => Err(unavailable(false, at)),
    }
}

impl Objects for SimObjects {
    fn get(&self, key: &str) -> ObjResult<Vec<u8>> {
        let mut s = self.state();
        read_fault(SimObjects::request(&mut s, "get"), s.requests)?;
        s.objects.get(key).cloned().ok_or(ObjError::NotFound)
    }

    fn head(&self, key: &str) -> ObjResult<ObjectMeta> {
        let mut s = self.state();
        read_fault(SimObjects::request(&mut s, "head"), s.requests)?;
        s.objects
            .get(key)
            .map(|b| ObjectMeta {
                key: key.to_string(),
                size: b.len() as u64,
            })
            .ok_or(ObjError::NotFound)
    }

    fn put(&self, key: &str, bytes: &[u8], mode: PutMode) -> ObjResult<()> {
        let mut s = self.state();
        let kind = match mode {
            PutMode::Create => "put_create",
            PutMode::Overwrite => "put_overwrite",
        };
        let mut fault = SimObjects::request(&mut s, kind);
        let at = s.requests;
        if let (None, Some(seed), PutMode::Create) = (fault, s.create_timeouts, mode) {
            fault = match crate::rng::SplitMix64::new(seed ^ at.wrapping_mul(0x9e37_79b9))
                .next_u64()
                % 8
            {
                0 => Some(Fault::TimeoutApplied),
                1 => Some(Fault::TimeoutLost),
                _ => None,
            };
        }
        if matches!(fault, Some(Fault::Fail) | Some(Fault::Dead)) {
            return Err(unavailable(false, at));
        }
        if fault == Some(Fault::TimeoutLost) {
            return Err(unavailable(true, at));
        }
        let exists = s.objects.contains_key(key);
        let applied = match mode {
            PutMode::Create if exists => Err(ObjError::Exists),
            _ => {
                s.objects.insert(key.to_string(), bytes.to_vec());
                Ok(())
            }
        };
        match fault {
            Some(Fault::TimeoutApplied) => Err(unavailable(true, at)),
            _ => applied,
        }
    }

    fn delete(&self, key: &str) -> ObjResult<()> {
        let mut s = self.state();
        let fault = SimObjects::request(&mut s, "delete");
        let at = s.requests;
        match fault {
            Some(Fault::Fail) | Some(Fault::Dead) => return Err(unavailable(false, at)),
            Some(Fault::TimeoutLost) => return Err(unavailable(true, at)),
            _ => {}
        }
        s.objects.remove(key);
        match fault {
            Some(Fault::TimeoutApplied) => Err(unavailable(true, at)),
            _ => Ok(()),
        }
    }

    fn list(&self, prefix: &str) -> ObjResult<Vec<ObjectMeta>> {
        let mut s = self.state();
        read_fault(SimObjects::request(&mut s, "list"), s.requests)?;
        Ok(s.objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, b)| ObjectMeta {
                key: k.clone(),
                size: b.len() as u64,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::objects::{create_resolving, Created, CREATE_ATTEMPTS};
    use proptest::prelude::*;

    #[test]
    fn create_if_absent_refuses_a_taken_key_and_overwrite_replaces_whole() {
        let s = SimObjects::new();
        s.put("a/b", b"one", PutMode::Create).unwrap();
        assert_eq!(s.put("a/b", b"two", PutMode::Create), Err(ObjError::Exists));
        assert_eq!(s.get("a/b").unwrap(), b"one");
        s.put("a/b", b"three", PutMode::Overwrite).unwrap();
        assert_eq!(s.get("a/b").unwrap(), b"three");
        assert_eq!(s.get("a/c"), Err(ObjError::NotFound));
        s.put("a/bc", b"x", PutMode::Create).unwrap();
        s.put("b", b"y", PutMode::Create).unwrap();
        let keys: Vec<String> = s.list("a/").unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, ["a/b", "a/bc"]);
        s.delete("a/b").unwrap();
        s.delete("a/b").unwrap();
        assert_eq!(s.head("a/bc").unwrap().size, 1);
    }

    #[test]
    fn a_timed_out_write_may_or_may_not_have_happened() {
        let s = SimObjects::new();
        s.fail_request(1, Fault::TimeoutApplied);
        s.fail_request(2, Fault::TimeoutLost);
        let timeout = |r: ObjResult<()>| {
            matches!(
                r,
                Err(ObjError::Unavailable {
                    maybe_applied: true,
                    ..
                })
            )
        };
        assert!(timeout(s.put("k1", b"v", PutMode::Create)));
        assert!(timeout(s.put("k2", b"v", PutMode::Create)));
        assert_eq!(s.get("k1").unwrap(), b"v");
        assert_eq!(s.get("k2"), Err(ObjError::NotFound));
    }

    /// The outcome `create_resolving` reports is the truth, whatever the store did: `Ours` iff
    /// the object now holds our bytes, `Lost` iff it holds the rival's, and an error only
    /// when every attempt went unanswered. A rival may have created the key before us, or
    /// between any two of our requests.
    fn resolves_truthfully(faults: Vec<(u64, Fault)>, rival_at: Option<u64>) {
        let s = SimObjects::new();
        for (k, f) in &faults {
            s.fail_request(*k, *f);
        }
        if let Some(k) = rival_at {
            s.rival_create_at(k, "lease-1", b"rival");
        }
        let got = create_resolving(&s, "lease-1", b"ours");
        let now = s.objects().get("lease-1").cloned();
        match got {
            Ok(Created::Ours) => assert_eq!(now.as_deref(), Some(&b"ours"[..]), "{faults:?}"),
            Ok(Created::Lost) => assert_eq!(now.as_deref(), Some(&b"rival"[..]), "{faults:?}"),
            Err(e) => {
                // Every attempt met a fault: at least one distinct faulted request each.
                assert!(matches!(e, ObjError::Unavailable { .. }), "{e}");
                let distinct: std::collections::BTreeSet<u64> =
                    faults.iter().map(|(k, _)| *k).collect();
                assert!(
                    distinct.len() >= CREATE_ATTEMPTS,
                    "gave up after {} faulted requests: {faults:?}",
                    distinct.len()
                );
            }
        }
    }

    proptest! {
        #![proptest_config(trainctl_core::testing::seeded_config(256, module_path!()))]

        #[test]
        fn create_resolving_reports_the_truth(
            faults in prop::collection::vec(
                (1u64..12, prop_oneof![Just(Fault::Fail), Just(Fault::TimeoutApplied), Just(Fault::TimeoutLost)]),
                0..10,
            ),
            rival in prop::option::of(1u64..12),
        ) {
            resolves_truthfully(faults, rival);
        }
    }

    /// The planted regression the issue names: a retry that meets our own object, taken for
    /// a lost race. `create_resolving` must answer `Ours` here.
    #[test]
    fn a_retried_create_that_meets_its_own_object_is_ours() {
        let s = SimObjects::new();
        s.fail_request(1, Fault::TimeoutApplied);
        assert_eq!(create_resolving(&s, "k", b"ours"), Ok(Created::Ours));
        assert_eq!(
            s.counts().get("put_create"),
            Some(&1),
            "read back, not re-put"
        );
    }
}
