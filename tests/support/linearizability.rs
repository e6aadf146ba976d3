//! Linearizability checker for paxkv histories.
//!
//! This is the Wing & Gong backtracking search with Lowe's memoization, as
//! implemented by the Porcupine checker: the history is turned into a list of
//! call/return events sorted by time, and the search repeatedly picks an
//! operation whose call event precedes every pending return event, applies it
//! to the model, and backtracks when it reaches a return event of an operation
//! that has not been linearized yet. A cache of already explored
//! `(set of linearized operations, model state)` pairs prunes the search.
//!
//! Histories are split per key (P-compositionality): every key is an
//! independent register, checked on its own.
//!
//! Operations whose outcome is unknown (`ret == None` or `output == None`, e.g.
//! a timeout or a lost connection) may take effect at any time after their call
//! or never: they get no return event (their return time is +infinity), any
//! output is accepted for them, and the search succeeds as soon as all
//! *completed* operations are linearized, whatever unknown operations are left
//! over. Unknown `Get`s have no effect and are dropped before the search.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

// The lease record's change functions (`paxos::lease`), which the model of a lease's register
// applies to its value as the register does: from paxkv, through the parent module (the kit
// or the simulation).
use super::lease_model;

/// The request a client sent for one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    Get,
    Put {
        value: Vec<u8>,
    },
    Delete,
    /// A delete only of version `expect`.
    DeleteIf {
        expect: u64,
    },
    /// The version raised by one if there is a value (a lease's keepalive).
    Touch,
    Cas {
        expect: u64,
        value: Vec<u8>,
    },
    /// The key was left out of a list that covered it: it had no value at some moment within
    /// the list's call (the listing's completeness, `actors::list`).
    Absent,
    /// A put (`expect: None`) or cas attaching the key to `lease`; `fence: Some(f)`: only if
    /// the key's fence is `f` (the node's own command, `Command::LeasedWrite`); `None`: a
    /// client's leased put, whose node reads the fence itself.
    LeasedWrite {
        expect: Option<u64>,
        value: Vec<u8>,
        lease: u64,
        fence: Option<u64>,
    },
    /// Lease `lease` ended and released the key (deleted if attached to it, fence raised):
    /// a release by the cluster, or a delete by expiry a test adds to its history as an
    /// unknown operation called at the earliest moment the expiry may happen (so that it
    /// may take effect any time after, or not yet, but never before).
    Release {
        lease: u64,
    },
    /// On a lease's register: record `key` in the lease (`Command::LeaseAttach`).
    LeaseAttach {
        key: Vec<u8>,
        max_keys: u32,
    },
    /// On a lease's register: end it at version `expect` (0: any).
    LeaseEnd {
        expect: u64,
    },
    /// A read with the lease and the fence.
    Inspect,
}

impl Input {
    /// Reads change nothing: an unknown one is dropped before the search.
    pub fn is_read(&self) -> bool {
        matches!(self, Input::Get | Input::Absent | Input::Inspect)
    }
}

/// The response a client observed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Output {
    Get {
        value: Option<Vec<u8>>,
        version: u64,
    },
    Put {
        version: u64,
    },
    Delete {
        deleted: bool,
        version: u64,
    },
    Cas {
        swapped: bool,
        version: u64,
    },
    /// What a list observed of a key it left out: `live: false`.
    Absent {
        live: bool,
    },
    /// A leased write refused: the fence is not the one it named.
    Fenced {
        fence: u64,
    },
    Inspect {
        value: Option<Vec<u8>>,
        version: u64,
        lease: Option<u64>,
        fence: u64,
    },
}

/// One client operation as observed. Times are any monotonically comparable
/// u64 (e.g. nanoseconds since the test start).
///
/// `ret == None` or `output == None` means the outcome is unknown: the
/// operation may have taken effect at any time after `call`, or never.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Operation {
    pub client: u64,
    pub key: Vec<u8>,
    pub input: Input,
    pub call: u64,
    pub ret: Option<u64>,
    pub output: Option<Output>,
}

impl Operation {
    /// True if the outcome of the operation is unknown.
    pub fn is_unknown(&self) -> bool {
        self.ret.is_none() || self.output.is_none()
    }
}

/// Result of a linearizability check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's history is linearizable.
    Ok,
    /// The history of `key` is not linearizable. `ops` is the number of
    /// operations on that key; `longest_prefix` holds indices into that key's
    /// operation list (the operations of `key` in history order) forming the
    /// longest partial linearization found, in linearization order.
    Illegal {
        key: Vec<u8>,
        ops: usize,
        longest_prefix: Vec<usize>,
    },
    /// The search for `key` did not finish before the deadline.
    Timeout { key: Vec<u8> },
}

impl CheckResult {
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }

    pub fn is_illegal(&self) -> bool {
        matches!(self, CheckResult::Illegal { .. })
    }
}

/// Model state of one key: a versioned register, with the lease its value is attached to and
/// its fence (`paxos::lease`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct State {
    pub version: u64,
    pub value: Option<Vec<u8>>,
    pub lease: Option<u64>,
    pub fence: u64,
}

/// Applies `input` to `state`, returning the new state (`None` if unchanged)
/// and the output the operation must produce. The fence goes up by one with every change of
/// the version, and with every release (`paxos::register`).
pub fn step(state: &State, input: &Input) -> (Option<State>, Output) {
    let (next, output) = change(state, input);
    let next = next.map(|mut next| {
        if next.version != state.version || matches!(input, Input::Release { .. }) {
            next.fence = state.fence + 1;
        }
        next
    });
    (next, output)
}

fn change(state: &State, input: &Input) -> (Option<State>, Output) {
    match input {
        Input::Absent => (
            None,
            Output::Absent {
                live: state.value.is_some(),
            },
        ),
        Input::Get => (
            None,
            Output::Get {
                value: state.value.clone(),
                version: state.version,
            },
        ),
        Input::Inspect => (
            None,
            Output::Inspect {
                value: state.value.clone(),
                version: state.version,
                lease: state.lease,
                fence: state.fence,
            },
        ),
        Input::Put { value } => write_step(state, value, None),
        Input::Delete => delete_step(state, true),
        Input::DeleteIf { expect } => delete_step(state, state.version == *expect),
        Input::Release { lease } => {
            let attached = state.lease == Some(*lease);
            let (next, output) = delete_step(state, attached);
            // Changed either way: `step` raises the fence.
            (Some(next.unwrap_or_else(|| state.clone())), output)
        }
        // A touch is a swap of the value for itself when it is a live lease's.
        Input::Touch => {
            let live = lease_model::LeaseRecord::live(state.value.as_deref()).is_some();
            cas_step(state, live, state.value.clone(), state.lease)
        }
        Input::LeaseAttach { key, max_keys } => {
            match lease_model::attach(state.value.as_deref(), key, *max_keys) {
                Some(next) => cas_step(state, true, Some(next), state.lease),
                None => cas_step(state, false, None, None),
            }
        }
        Input::LeaseEnd { expect } => {
            let at = *expect == 0 || state.version == *expect;
            match lease_model::end(state.value.as_deref()).filter(|_| at) {
                Some(ended) => {
                    let version = state.version + 1;
                    let next = State {
                        version,
                        value: Some(ended),
                        ..state.clone()
                    };
                    let output = Output::Delete {
                        deleted: true,
                        version,
                    };
                    (Some(next), output)
                }
                None => (
                    None,
                    Output::Delete {
                        deleted: false,
                        version: state.version,
                    },
                ),
            }
        }
        Input::Cas { expect, value } => cas_step(
            state,
            cas_matches(state, *expect),
            Some(value.clone()),
            None,
        ),
        Input::LeasedWrite {
            expect,
            value,
            lease,
            fence,
        } => {
            if fence.is_some_and(|f| f != state.fence) {
                return (None, Output::Fenced { fence: state.fence });
            }
            match expect {
                None => write_step(state, value, Some(*lease)),
                Some(expect) => cas_step(
                    state,
                    cas_matches(state, *expect),
                    Some(value.clone()),
                    Some(*lease),
                ),
            }
        }
    }
}

/// A put's step: `value` at the next version, attached to `lease`.
fn write_step(state: &State, value: &[u8], lease: Option<u64>) -> (Option<State>, Output) {
    let version = state.version + 1;
    let next = State {
        version,
        value: Some(value.to_vec()),
        lease,
        fence: state.fence,
    };
    (Some(next), Output::Put { version })
}

/// A delete's step, if there is a value and `matches`; a delete detaches the key.
fn delete_step(state: &State, matches: bool) -> (Option<State>, Output) {
    if state.value.is_some() && matches {
        let version = state.version + 1;
        let next = State {
            version,
            value: None,
            lease: None,
            fence: state.fence,
        };
        let output = Output::Delete {
            deleted: true,
            version,
        };
        (Some(next), output)
    } else {
        let output = Output::Delete {
            deleted: false,
            version: state.version,
        };
        (None, output)
    }
}

/// Does a compare-and-set on `expect` swap (`expect == 0`: when there is no value)?
fn cas_matches(state: &State, expect: u64) -> bool {
    if expect == 0 {
        state.value.is_none()
    } else {
        state.version == expect
    }
}

/// A compare-and-set's step: to `value`, attached to `lease`, at the next version if `swap`,
/// else nothing.
fn cas_step(
    state: &State,
    swap: bool,
    value: Option<Vec<u8>>,
    lease: Option<u64>,
) -> (Option<State>, Output) {
    if swap {
        let version = state.version + 1;
        let next = State {
            version,
            value,
            lease,
            fence: state.fence,
        };
        (
            Some(next),
            Output::Cas {
                swapped: true,
                version,
            },
        )
    } else {
        (
            None,
            Output::Cas {
                swapped: false,
                version: state.version,
            },
        )
    }
}

/// Checks a whole history (any number of keys). Keys are checked one after
/// another in key order, all sharing one deadline `now + timeout`. Returns the
/// first `Illegal` key if any, else the first `Timeout` key if any, else `Ok`.
pub fn check_operations(history: &[Operation], timeout: Duration) -> CheckResult {
    let deadline = Instant::now() + timeout;
    let mut first_timeout = None;
    for (key, ops) in group_by_key(history) {
        match check_key_refs(key, &ops, deadline) {
            CheckResult::Ok => {}
            illegal @ CheckResult::Illegal { .. } => return illegal,
            timeout @ CheckResult::Timeout { .. } => {
                if first_timeout.is_none() {
                    first_timeout = Some(timeout);
                }
            }
        }
    }
    first_timeout.unwrap_or(CheckResult::Ok)
}

/// Checks the history of a single key. All operations are assumed to be on
/// the same key (the key reported in the result is the first operation's).
pub fn check_key(ops: &[Operation], deadline: Instant) -> CheckResult {
    let key: &[u8] = ops.first().map(|op| op.key.as_slice()).unwrap_or(&[]);
    let refs: Vec<&Operation> = ops.iter().collect();
    check_key_refs(key, &refs, deadline)
}

fn group_by_key(history: &[Operation]) -> BTreeMap<&[u8], Vec<&Operation>> {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_slice()).or_default().push(op);
    }
    by_key
}

fn check_key_refs(key: &[u8], ops: &[&Operation], deadline: Instant) -> CheckResult {
    // Unknown Gets have no effect: drop them. `idx` maps back to `ops`.
    let idx: Vec<usize> = (0..ops.len())
        .filter(|&i| !(ops[i].is_unknown() && ops[i].input.is_read()))
        .collect();
    let relevant: Vec<&Operation> = idx.iter().map(|&i| ops[i]).collect();
    let unread = forget_unread_values(&relevant);
    let relevant: Vec<&Operation> = match &unread {
        Some(mapped) => mapped.iter().collect(),
        None => relevant,
    };
    match search(&relevant, deadline) {
        Search::Linearizable(order) => {
            if let Err(e) = verify_linearization(&relevant, &order) {
                panic!(
                    "linearizability checker bug: found an invalid linearization for key {:?}: {e}",
                    String::from_utf8_lossy(key)
                );
            }
            CheckResult::Ok
        }
        Search::Illegal(longest) => CheckResult::Illegal {
            key: key.to_vec(),
            ops: ops.len(),
            longest_prefix: longest.into_iter().map(|i| idx[i]).collect(),
        },
        Search::Timeout => CheckResult::Timeout { key: key.to_vec() },
    }
}

/// The value every write whose value no completed operation reads is given
/// ([`forget_unread_values`]).
const UNREAD: &[u8] = b"\0a value no completed operation read\0";

/// The same operations, with the value of every write that no completed operation read
/// replaced by one placeholder ([`UNREAD`]); `None` when nothing would change, or on a
/// key whose model reads values itself (a lease's register: attach, end, touch).
///
/// Why the verdict is the same: a data key's model looks at a value in two ways only,
/// whether there is one (a delete, a release, a cas on version 0, a list's absence) and
/// which one a get or an inspect returns. Map every value to itself if a completed
/// operation returned it and to the placeholder otherwise: presence is kept, and a state's mapped value is a read value
/// exactly when its real one is (the placeholder is no read value). So every linearization
/// of one history is one of the other, with the same outputs. What it buys: writes of
/// unknown outcome that nobody read (most of a busy key's) leave states that differ only
/// in such values; with one placeholder they are one state to the search's cache, not one
/// each.
fn forget_unread_values(ops: &[&Operation]) -> Option<Vec<Operation>> {
    let own_model = ops.iter().any(|o| {
        matches!(
            o.input,
            Input::LeaseAttach { .. } | Input::LeaseEnd { .. } | Input::Touch
        )
    });
    let read: HashSet<&[u8]> = ops
        .iter()
        .filter_map(|o| match o.output.as_ref()? {
            Output::Get { value, .. } | Output::Inspect { value, .. } => value.as_deref(),
            _ => None,
        })
        .collect();
    if own_model || read.contains(UNREAD) {
        return None;
    }
    let mut changed = false;
    let mapped = ops
        .iter()
        .map(|o| {
            let mut o = (*o).clone();
            if let Input::Put { value }
            | Input::Cas { value, .. }
            | Input::LeasedWrite { value, .. } = &mut o.input
            {
                if !read.contains(value.as_slice()) {
                    *value = UNREAD.to_vec();
                    changed = true;
                }
            }
            o
        })
        .collect();
    changed.then_some(mapped)
}

/// Independent check that `order` (indices into `ops`) is a linearization:
/// it contains every completed op at most once, respects real-time order and
/// every completed op's output matches the model.
fn verify_linearization(ops: &[&Operation], order: &[usize]) -> Result<(), String> {
    let mut seen = vec![false; ops.len()];
    for &i in order {
        if i >= ops.len() || seen[i] {
            return Err(format!("op {i} repeated or out of range"));
        }
        seen[i] = true;
    }
    if let Some(i) = (0..ops.len()).find(|&i| !seen[i] && !ops[i].is_unknown()) {
        return Err(format!("completed op {i} missing"));
    }
    // Real time: no op may be linearized after an op that returned before
    // it was called.
    let mut min_ret_after = u64::MAX;
    for &i in order.iter().rev() {
        if ops[i].call > min_ret_after {
            return Err(format!(
                "op {i} linearized after an op that returned before its call"
            ));
        }
        let ret = if ops[i].is_unknown() {
            u64::MAX
        } else {
            ops[i].ret.unwrap_or(u64::MAX).max(ops[i].call)
        };
        min_ret_after = min_ret_after.min(ret);
    }
    let mut state = State::default();
    for &i in order {
        let (next, out) = step(&state, &ops[i].input);
        if !ops[i].is_unknown() && ops[i].output.as_ref() != Some(&out) {
            return Err(format!("op {i} output mismatch: model gives {out:?}"));
        }
        if let Some(next) = next {
            state = next;
        }
    }
    Ok(())
}

enum Search {
    /// Linearization order of the ops (indices into the searched slice).
    Linearizable(Vec<usize>),
    /// Longest partial linearization found.
    Illegal(Vec<usize>),
    Timeout,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;
const DEADLINE_CHECK_INTERVAL: u64 = 1024;

/// Model states interned to small ids; the state (value bytes included) is
/// hashed once when interned.
struct States {
    states: Vec<State>,
    ids: HashMap<State, u32>,
}

impl States {
    fn new() -> Self {
        let mut s = States {
            states: Vec::new(),
            ids: HashMap::new(),
        };
        s.intern(State::default());
        s
    }

    fn intern(&mut self, state: State) -> u32 {
        match self.ids.entry(state) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let id = self.states.len() as u32;
                self.states.push(e.key().clone());
                e.insert(id);
                id
            }
        }
    }
}

/// Memoization cache of explored (linearized set, state) pairs. The set is a
/// bitset whose Zobrist hash is maintained incrementally, so a lookup never
/// needs to copy the bitset.
#[derive(Default)]
struct Cache {
    buckets: HashMap<(u64, u32), Vec<Box<[u64]>>>,
}

impl Cache {
    /// Returns true if the pair was not in the cache (and inserts it).
    fn insert(&mut self, zobrist: u64, state: u32, bits: &[u64]) -> bool {
        let bucket = self.buckets.entry((zobrist, state)).or_default();
        if bucket.iter().any(|b| &b[..] == bits) {
            false
        } else {
            bucket.push(bits.into());
            true
        }
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The version of the state an operation with this output was applied to.
fn pre_version(output: &Output) -> u64 {
    match *output {
        Output::Get { version, .. } => version,
        // Absent from a list: any version with no value, so no bound on versions.
        Output::Absent { .. } => u64::MAX,
        Output::Inspect { version, .. } => version,
        // Refused by its fence: any version.
        Output::Fenced { .. } => u64::MAX,
        Output::Put { version } => version.saturating_sub(1),
        Output::Delete { deleted, version }
        | Output::Cas {
            swapped: deleted,
            version,
        } => {
            if deleted {
                version.saturating_sub(1)
            } else {
                version
            }
        }
    }
}

fn multiset_remove(set: &mut BTreeMap<u64, usize>, v: u64) {
    if let Some(count) = set.get_mut(&v) {
        *count -= 1;
        if *count == 0 {
            set.remove(&v);
        }
    }
}

/// The call and return events of a history, sorted by time, as a doubly linked list that the
/// search unlinks an operation's events from when it linearizes it (and relinks on
/// backtracking). Node 0 is the head sentinel.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    node_op: Vec<usize>,
    node_is_call: Vec<bool>,
    ret_node: Vec<usize>,
    call_node: Vec<usize>,
}

impl Events {
    /// At equal times calls come before returns, so operations touching at a single instant
    /// count as concurrent. Unknown operations have no return event (return at +infinity).
    fn of(ops: &[&Operation], unknown: &[bool]) -> Events {
        let n = ops.len();
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, false, i));
            if !unknown[i] {
                let ret = op.ret.unwrap_or(u64::MAX).max(op.call);
                events.push((ret, true, i));
            }
        }
        events.sort_unstable();
        let m = events.len() + 1;
        let mut list = Events {
            next: vec![NIL; m],
            prev: vec![NIL; m],
            node_op: vec![NIL; m],
            node_is_call: vec![false; m],
            ret_node: vec![NIL; n],
            call_node: vec![NIL; n],
        };
        for (k, &(_, is_ret, op)) in events.iter().enumerate() {
            let node = k + 1;
            list.node_op[node] = op;
            list.node_is_call[node] = !is_ret;
            if is_ret {
                list.ret_node[op] = node;
            } else {
                list.call_node[op] = node;
            }
            list.prev[node] = node - 1;
            list.next[node - 1] = node;
        }
        list
    }

    fn unlink(&mut self, x: usize) {
        self.next[self.prev[x]] = self.next[x];
        if self.next[x] != NIL {
            self.prev[self.next[x]] = self.prev[x];
        }
    }

    fn relink(&mut self, x: usize) {
        self.next[self.prev[x]] = x;
        if self.next[x] != NIL {
            self.prev[self.next[x]] = x;
        }
    }

    /// Takes operation `op` (whose call event is `node`) out of the list, with its return.
    fn take(&mut self, op: usize, node: usize) {
        self.unlink(node);
        if self.ret_node[op] != NIL {
            self.unlink(self.ret_node[op]);
        }
    }

    /// Puts back what [`Events::take`] took, in the reverse order.
    fn put_back(&mut self, op: usize, node: usize) {
        if self.ret_node[op] != NIL {
            self.relink(self.ret_node[op]);
        }
        self.relink(node);
        debug_assert_eq!(self.call_node[op], node);
    }

    fn ops_of(&self, stack: &[(usize, u32)]) -> Vec<usize> {
        stack.iter().map(|&(node, _)| self.node_op[node]).collect()
    }
}

/// Whether linearizing `op` now, giving `new_state` and `out`, is worth trying: a completed
/// operation must have returned `out`; an unknown one never needs to be linearized, so only
/// those that are useful are tried: one that leaves the state unchanged can always be
/// dropped, and one that bumps the version is only possible if every pending completed op
/// observed a version at least that high (versions never decrease).
fn may_linearize(
    op: &Operation,
    unknown: bool,
    new_state: &Option<State>,
    out: &Output,
    pending_versions: &BTreeMap<u64, usize>,
) -> bool {
    if !unknown {
        return op.output.as_ref() == Some(out);
    }
    match new_state {
        None => false,
        Some(s) => pending_versions
            .keys()
            .next()
            .is_none_or(|&min| min >= s.version),
    }
}

/// For each operation of unknown outcome, the latest-called earlier one with the same input
/// (`None` for a completed operation, or the first of its kind).
///
/// The search never linearizes an unknown operation while such a twin is not yet linearized.
/// Why that loses no linearization: an unknown operation's only constraint is its call (it
/// has no return, and any output is accepted), and its effect is its input's. Given a
/// linearization that places `b` while its earlier-called twin `a` is placed later or not at
/// all, exchange them: `a` where `b` was (its call is earlier still, so it was already
/// called there), `b` where `a` was, or nowhere. Every state and every completed output is
/// unchanged. Repeating the exchange yields a linearization in which twins are placed in
/// call order. With [`forget_unread_values`], the writes of unknown outcome that nobody
/// read are mostly twins, and the search counts them instead of trying their subsets.
fn earlier_twins(ops: &[&Operation], unknown: &[bool]) -> Vec<Option<usize>> {
    let mut by_call: Vec<usize> = (0..ops.len()).filter(|&i| unknown[i]).collect();
    by_call.sort_by_key(|&i| (ops[i].call, i));
    let mut last: HashMap<&Input, usize> = HashMap::new();
    let mut twin = vec![None; ops.len()];
    for i in by_call {
        twin[i] = last.insert(&ops[i].input, i);
    }
    twin
}

fn search(ops: &[&Operation], deadline: Instant) -> Search {
    let n = ops.len();
    let unknown: Vec<bool> = ops.iter().map(|op| op.is_unknown()).collect();
    let mut events = Events::of(ops, &unknown);

    let zobrist: Vec<u64> = (0..n as u64).map(splitmix64).collect();
    let mut bits = vec![0u64; n.div_ceil(64).max(1)];
    let mut hash = 0u64;
    let mut cache = Cache::default();
    let mut states = States::new();
    let mut state: u32 = 0;
    // (call node of the linearized op, state before it)
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    let mut remaining = unknown.iter().filter(|&&u| !u).count();
    // Multiset of the versions that pending completed ops observed before
    // taking effect (see `pre_version`).
    let pre_version: Vec<u64> = ops
        .iter()
        .map(|op| op.output.as_ref().map_or(0, pre_version))
        .collect();
    let mut pending_versions: BTreeMap<u64, usize> = BTreeMap::new();
    for i in (0..n).filter(|&i| !unknown[i]) {
        *pending_versions.entry(pre_version[i]).or_default() += 1;
    }
    let twin = earlier_twins(ops, &unknown);
    let linearized = |bits: &[u64], op: usize| bits[op / 64] & (1 << (op % 64)) != 0;
    let mut entry = events.next[HEAD];
    let mut iterations: u64 = 0;

    loop {
        if remaining == 0 {
            return Search::Linearizable(events.ops_of(&stack));
        }
        iterations += 1;
        if iterations.is_multiple_of(DEADLINE_CHECK_INTERVAL) && Instant::now() >= deadline {
            return Search::Timeout;
        }
        // While a completed op is pending its return event is in the list,
        // so the scan always meets a return event before running off the end;
        // treat NIL like a return event defensively.
        if entry != NIL && events.node_is_call[entry] {
            let op = events.node_op[entry];
            // Of identical unknown operations, the earliest-called first ([`earlier_twins`]).
            if twin[op].is_some_and(|t| !linearized(&bits, t)) {
                entry = events.next[entry];
                continue;
            }
            let (new_state, out) = step(&states.states[state as usize], &ops[op].input);
            if may_linearize(ops[op], unknown[op], &new_state, &out, &pending_versions) {
                let new_state = match new_state {
                    Some(s) => states.intern(s),
                    None => state,
                };
                bits[op / 64] |= 1 << (op % 64);
                let new_hash = hash ^ zobrist[op];
                if cache.insert(new_hash, new_state, &bits) {
                    stack.push((entry, state));
                    state = new_state;
                    hash = new_hash;
                    if !unknown[op] {
                        remaining -= 1;
                        multiset_remove(&mut pending_versions, pre_version[op]);
                    }
                    events.take(op, entry);
                    if stack.len() > longest.len() {
                        longest = events.ops_of(&stack);
                    }
                    entry = events.next[HEAD];
                    continue;
                }
                bits[op / 64] &= !(1 << (op % 64));
            }
            entry = events.next[entry];
        } else {
            let Some((node, prev_state)) = stack.pop() else {
                return Search::Illegal(longest);
            };
            let op = events.node_op[node];
            bits[op / 64] &= !(1 << (op % 64));
            hash ^= zobrist[op];
            state = prev_state;
            if !unknown[op] {
                remaining += 1;
                *pending_versions.entry(pre_version[op]).or_default() += 1;
            }
            events.put_back(op, node);
            entry = events.next[node];
        }
    }
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

const DESCRIBE_VALUE_LIMIT: usize = 64;

fn fmt_bytes(bytes: &[u8], limit: Option<usize>) -> String {
    match limit {
        Some(limit) if bytes.len() > limit => format!(
            "{:?}...({} bytes)",
            String::from_utf8_lossy(&bytes[..limit]),
            bytes.len()
        ),
        _ => format!("{:?}", String::from_utf8_lossy(bytes)),
    }
}

fn fmt_opt_bytes(bytes: &Option<Vec<u8>>, limit: Option<usize>) -> String {
    match bytes {
        Some(b) => fmt_bytes(b, limit),
        None => "nil".to_string(),
    }
}

fn fmt_input(input: &Input, limit: Option<usize>) -> String {
    match input {
        Input::Get => "get()".to_string(),
        Input::Absent => "absent from a list()".to_string(),
        Input::Put { value } => format!("put(value={})", fmt_bytes(value, limit)),
        Input::Delete => "delete()".to_string(),
        Input::DeleteIf { expect } => format!("delete_if(expect={expect})"),
        Input::Touch => "touch()".to_string(),
        Input::Cas { expect, value } => {
            format!("cas(expect={expect}, value={})", fmt_bytes(value, limit))
        }
        Input::LeasedWrite {
            expect,
            value,
            lease,
            fence,
        } => format!(
            "leased_write(expect={expect:?}, value={}, lease={lease:x}, fence={fence:?})",
            fmt_bytes(value, limit)
        ),
        Input::Release { lease } => format!("release(lease={lease:x})"),
        Input::LeaseAttach { key, .. } => format!("lease_attach(key={})", fmt_bytes(key, limit)),
        Input::LeaseEnd { expect } => format!("lease_end(expect={expect})"),
        Input::Inspect => "inspect()".to_string(),
    }
}

fn fmt_output(output: &Output, limit: Option<usize>) -> String {
    match output {
        Output::Get { value, version } => {
            format!(
                "get(value={}, version={version})",
                fmt_opt_bytes(value, limit)
            )
        }
        Output::Put { version } => format!("put(version={version})"),
        Output::Absent { live } => format!("absent(live={live})"),
        Output::Delete { deleted, version } => {
            format!("delete(deleted={deleted}, version={version})")
        }
        Output::Cas { swapped, version } => format!("cas(swapped={swapped}, version={version})"),
        Output::Fenced { fence } => format!("fenced(fence={fence})"),
        Output::Inspect {
            value,
            version,
            lease,
            fence,
        } => format!(
            "inspect(value={}, version={version}, lease={lease:?}, fence={fence})",
            fmt_opt_bytes(value, limit)
        ),
    }
}

fn fmt_state(state: &State) -> String {
    format!(
        "version={} value={} lease={:?} fence={}",
        state.version,
        fmt_opt_bytes(&state.value, Some(DESCRIBE_VALUE_LIMIT)),
        state.lease,
        state.fence
    )
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fmt_input(self, None))
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fmt_output(self, None))
    }
}

fn fmt_op_line(idx: usize, op: &Operation) -> String {
    let ret = match op.ret {
        Some(r) => r.to_string(),
        None => "?".to_string(),
    };
    let out = match &op.output {
        Some(o) => fmt_output(o, Some(DESCRIBE_VALUE_LIMIT)),
        None => "?".to_string(),
    };
    format!(
        "[{idx:>4}] client={} call={} ret={} {} -> {}",
        op.client,
        op.call,
        ret,
        fmt_input(&op.input, Some(DESCRIBE_VALUE_LIMIT)),
        out
    )
}

/// Human-readable explanation of `result` for `history` (the same history
/// that was checked).
pub fn describe(history: &[Operation], result: &CheckResult) -> String {
    let mut s = String::new();
    match result {
        CheckResult::Ok => {
            let keys = group_by_key(history).len();
            let _ = writeln!(
                s,
                "history is linearizable ({} ops on {keys} keys)",
                history.len()
            );
        }
        CheckResult::Timeout { key } => {
            let n = history.iter().filter(|op| &op.key == key).count();
            let _ = writeln!(
                s,
                "linearizability check timed out on key {} ({n} ops); the history may or may not be linearizable",
                fmt_bytes(key, Some(DESCRIBE_VALUE_LIMIT))
            );
        }
        CheckResult::Illegal {
            key,
            ops: _,
            longest_prefix,
        } => {
            let ops: Vec<&Operation> = history.iter().filter(|op| &op.key == key).collect();
            let _ = writeln!(
                s,
                "history is NOT linearizable on key {} ({} ops; longest linearizable prefix has {} ops)",
                fmt_bytes(key, Some(DESCRIBE_VALUE_LIMIT)),
                ops.len(),
                longest_prefix.len()
            );
            let mut in_prefix = vec![false; ops.len()];
            for &i in longest_prefix {
                if i < ops.len() {
                    in_prefix[i] = true;
                }
            }
            let mut by_call: Vec<usize> = (0..ops.len()).collect();
            by_call.sort_by_key(|&i| (ops[i].call, ops[i].ret.unwrap_or(u64::MAX), i));
            describe_ops(&mut s, &ops, &by_call, &in_prefix);
            let state = describe_prefix(&mut s, &ops, longest_prefix);
            describe_candidates(&mut s, &ops, &by_call, &in_prefix, &state);
        }
    }
    s
}

/// A key's operations in call order, those of the longest prefix marked.
fn describe_ops(s: &mut String, ops: &[&Operation], by_call: &[usize], in_prefix: &[bool]) {
    let _ = writeln!(
        s,
        "operations on this key in call order ([index] into this key's ops; * = in the longest prefix, ret=? = unknown outcome):"
    );
    for &i in by_call {
        let mark = if in_prefix[i] { '*' } else { ' ' };
        let _ = writeln!(s, "  {mark} {}", fmt_op_line(i, ops[i]));
    }
}

/// The longest linearizable prefix with the model's state after each op; the state after it.
fn describe_prefix(s: &mut String, ops: &[&Operation], longest_prefix: &[usize]) -> State {
    let _ = writeln!(
        s,
        "longest linearizable prefix (linearization order, model state after each op):"
    );
    let mut state = State::default();
    for (n, &i) in longest_prefix.iter().enumerate() {
        let Some(op) = ops.get(i) else { continue };
        let (next, _) = step(&state, &op.input);
        if let Some(next) = next {
            state = next;
        }
        let _ = writeln!(
            s,
            "  {:>4}. {}   => {}",
            n + 1,
            fmt_op_line(i, op),
            fmt_state(&state)
        );
    }
    let _ = writeln!(s, "state after the prefix: {}", fmt_state(&state));
    state
}

/// Operations that could come next (called before every pending completed op returned) and
/// what the model says they would return there.
fn describe_candidates(
    s: &mut String,
    ops: &[&Operation],
    by_call: &[usize],
    in_prefix: &[bool],
    state: &State,
) {
    let min_ret = (0..ops.len())
        .filter(|&i| !in_prefix[i] && !ops[i].is_unknown())
        .filter_map(|i| ops[i].ret)
        .min()
        .unwrap_or(u64::MAX);
    let candidates: Vec<usize> = by_call
        .iter()
        .copied()
        .filter(|&i| !in_prefix[i] && ops[i].call <= min_ret)
        .filter(|&i| !(ops[i].is_unknown() && ops[i].input.is_read()))
        .collect();
    let _ = writeln!(
        s,
        "ops that could come next after the prefix (observed vs. what the model returns there):"
    );
    for &i in candidates.iter().take(32) {
        let (_, expected) = step(state, &ops[i].input);
        let _ = writeln!(
            s,
            "    {}   model: {}",
            fmt_op_line(i, ops[i]),
            fmt_output(&expected, Some(DESCRIBE_VALUE_LIMIT))
        );
    }
    if candidates.len() > 32 {
        let _ = writeln!(s, "    ... and {} more", candidates.len() - 32);
    }
}

/// Writes `history` as text, one op per line, tab separated:
/// `client  key  call  ret|?  input  output|?` (the key is lossy UTF-8,
/// quoted and escaped).
pub fn write_history(path: &Path, history: &[Operation]) -> std::io::Result<()> {
    let mut s = String::new();
    for op in history {
        let ret = match op.ret {
            Some(r) => r.to_string(),
            None => "?".to_string(),
        };
        let out = match &op.output {
            Some(o) => fmt_output(o, None),
            None => "?".to_string(),
        };
        let _ = writeln!(
            s,
            "{}\t{}\t{}\t{}\t{}\t{}",
            op.client,
            fmt_bytes(&op.key, None),
            op.call,
            ret,
            fmt_input(&op.input, None),
            out
        );
    }
    std::fs::write(path, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn op(client: u64, key: &str, input: Input, call: u64, ret: u64, output: Output) -> Operation {
        Operation {
            client,
            key: key.as_bytes().to_vec(),
            input,
            call,
            ret: Some(ret),
            output: Some(output),
        }
    }

    fn unknown(client: u64, key: &str, input: Input, call: u64) -> Operation {
        Operation {
            client,
            key: key.as_bytes().to_vec(),
            input,
            call,
            ret: None,
            output: None,
        }
    }

    fn put(v: &str) -> Input {
        Input::Put {
            value: v.as_bytes().to_vec(),
        }
    }

    fn cas(expect: u64, v: &str) -> Input {
        Input::Cas {
            expect,
            value: v.as_bytes().to_vec(),
        }
    }

    fn got(v: Option<&str>, version: u64) -> Output {
        Output::Get {
            value: v.map(|v| v.as_bytes().to_vec()),
            version,
        }
    }

    fn put_ok(version: u64) -> Output {
        Output::Put { version }
    }

    fn deleted(deleted: bool, version: u64) -> Output {
        Output::Delete { deleted, version }
    }

    fn cas_out(swapped: bool, version: u64) -> Output {
        Output::Cas { swapped, version }
    }

    #[track_caller]
    fn assert_ok(history: &[Operation]) {
        let r = check_operations(history, TIMEOUT);
        assert!(
            r.is_ok(),
            "expected Ok, got {r:?}\n{}",
            describe(history, &r)
        );
    }

    #[track_caller]
    fn assert_illegal(history: &[Operation]) {
        let r = check_operations(history, TIMEOUT);
        assert!(r.is_illegal(), "expected Illegal, got {r:?}");
        // The description must mention the failure and not panic.
        let d = describe(history, &r);
        assert!(d.contains("NOT linearizable"), "{d}");
    }

    // ----- writes of unknown outcome that nobody read -----

    /// 200 puts of unknown outcome, all concurrent, and a completed put that found 150 of
    /// them applied: the search must pick which. Their values are never read, so they are
    /// one placeholder value (`forget_unread_values`), and it takes them in call order
    /// (`earlier_twins`): without both, C(200, 150) subsets, and the check times out.
    #[test]
    fn writes_of_unknown_outcome_nobody_read_are_counted_not_searched() {
        let mut h: Vec<Operation> = (0..200)
            .map(|i| unknown(i, "k", put(&format!("u{i}")), i))
            .collect();
        h.push(op(500, "k", put("z"), 300, 301, put_ok(151)));
        h.push(op(501, "k", Input::Get, 302, 303, got(Some("z"), 151)));
        assert_ok(&h);
        // and a version no number of them can make is still refused
        let mut h: Vec<Operation> = (0..40)
            .map(|i| unknown(i, "k", put(&format!("u{i}")), i))
            .collect();
        h.push(op(500, "k", put("z"), 300, 301, put_ok(42)));
        assert_illegal(&h);
    }

    /// A value a completed read returned keeps its identity: the read is placed after the
    /// write of unknown outcome that wrote it, and a value no write wrote is refused.
    #[test]
    fn a_value_read_back_from_a_write_of_unknown_outcome_is_kept() {
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            unknown(2, "k", put("b"), 2),
            unknown(3, "k", put("c"), 2),
            op(4, "k", Input::Get, 3, 4, got(Some("b"), 2)),
            op(4, "k", Input::Get, 5, 6, got(Some("b"), 2)),
        ];
        assert_ok(&h);
        let mapped = forget_unread_values(&h.iter().collect::<Vec<_>>()).expect("c is unread");
        assert_eq!(mapped[1].input, put("b"), "a read value is kept");
        assert_eq!(
            mapped[2].input,
            Input::Put {
                value: UNREAD.to_vec()
            }
        );
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            unknown(2, "k", put("b"), 2),
            op(4, "k", Input::Get, 3, 4, got(Some("c"), 2)),
        ];
        assert_illegal(&h);
        // a read of "b" at version 2 after a read of "a" at version 2: "b" is read, kept
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            unknown(2, "k", put("b"), 2),
            unknown(3, "k", put("c"), 2),
            op(4, "k", Input::Get, 3, 4, got(Some("b"), 2)),
            op(4, "k", Input::Get, 5, 6, got(Some("c"), 2)),
        ];
        assert_illegal(&h);
    }

    // ----- lists: a key left out of a list that covered it -----

    const ABSENT: Output = Output::Absent { live: false };

    #[test]
    fn a_key_left_out_of_a_list_is_fine_if_it_had_no_value_at_some_moment_of_the_call() {
        // never written; deleted during the list; written during it
        assert_ok(&[op(1, "a", Input::Absent, 0, 10, ABSENT)]);
        assert_ok(&[
            op(1, "k", put("x"), 0, 1, put_ok(1)),
            op(2, "k", Input::Delete, 4, 6, deleted(true, 2)),
            op(3, "k", Input::Absent, 3, 10, ABSENT),
        ]);
        assert_ok(&[
            op(2, "k", put("x"), 4, 6, put_ok(1)),
            op(3, "k", Input::Absent, 3, 10, ABSENT),
        ]);
    }

    #[test]
    fn a_key_live_for_the_whole_list_cannot_be_left_out() {
        assert_illegal(&[
            op(1, "k", put("x"), 0, 1, put_ok(1)),
            op(3, "k", Input::Absent, 3, 10, ABSENT),
        ]);
        // a write that may have taken effect before the list does not excuse it either
        assert_illegal(&[
            op(1, "k", put("x"), 0, 1, put_ok(1)),
            unknown(2, "k", put("y"), 2),
            op(3, "k", Input::Absent, 3, 10, ABSENT),
            op(1, "k", Input::Get, 11, 12, got(Some("x"), 1)),
        ]);
    }

    // ----- linearizable histories -----

    #[test]
    fn empty_history_is_ok() {
        assert_ok(&[]);
    }

    #[test]
    fn sequential_history() {
        let h = vec![
            op(1, "k", Input::Get, 0, 1, got(None, 0)),
            op(1, "k", put("a"), 2, 3, put_ok(1)),
            op(2, "k", Input::Get, 4, 5, got(Some("a"), 1)),
            op(2, "k", cas(1, "b"), 6, 7, cas_out(true, 2)),
            op(1, "k", cas(1, "c"), 8, 9, cas_out(false, 2)),
            op(1, "k", Input::Delete, 10, 11, deleted(true, 3)),
            op(2, "k", Input::Get, 12, 13, got(None, 3)),
            op(2, "k", Input::Delete, 14, 15, deleted(false, 3)),
            op(1, "k", put("d"), 16, 17, put_ok(4)),
            op(1, "k", Input::Get, 18, 19, got(Some("d"), 4)),
        ];
        assert_ok(&h);
    }

    #[test]
    fn concurrent_overlapping_puts_get_sees_either() {
        // Puts of a and b overlap; the order is decided by their versions.
        for (va, vb, seen, seen_version) in [(1, 2, "b", 2), (2, 1, "a", 2)] {
            let h = vec![
                op(1, "k", put("a"), 0, 10, put_ok(va)),
                op(2, "k", put("b"), 1, 9, put_ok(vb)),
                op(3, "k", Input::Get, 11, 12, got(Some(seen), seen_version)),
            ];
            assert_ok(&h);
        }
        // A get overlapping both puts may see the intermediate value.
        let h = vec![
            op(1, "k", put("a"), 0, 10, put_ok(1)),
            op(2, "k", put("b"), 1, 9, put_ok(2)),
            op(3, "k", Input::Get, 2, 8, got(Some("a"), 1)),
        ];
        assert_ok(&h);
        // But not the one that was written first once both completed.
        let h = vec![
            op(1, "k", put("a"), 0, 10, put_ok(1)),
            op(2, "k", put("b"), 1, 9, put_ok(2)),
            op(3, "k", Input::Get, 11, 12, got(Some("a"), 1)),
        ];
        assert_illegal(&h);
    }

    #[test]
    fn get_overlapping_put_sees_new_value() {
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            op(1, "k", put("b"), 2, 10, put_ok(2)),
            op(2, "k", Input::Get, 3, 5, got(Some("b"), 2)),
            op(3, "k", Input::Get, 4, 6, got(Some("a"), 1)),
        ];
        // The second get sees the old value while the first one, overlapping
        // it, already saw the new one: fine since they overlap each other.
        assert_ok(&h);
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            op(1, "k", put("b"), 2, 10, put_ok(2)),
            op(2, "k", Input::Get, 3, 5, got(Some("b"), 2)),
        ];
        assert_ok(&h);
    }

    #[test]
    fn unknown_write_that_took_effect() {
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            unknown(2, "k", put("b"), 2),
            op(3, "k", Input::Get, 100, 101, got(Some("b"), 2)),
            op(3, "k", put("c"), 102, 103, put_ok(3)),
        ];
        assert_ok(&h);
        // Also an unknown write that took effect long after later ops.
        let h = vec![
            unknown(2, "k", put("b"), 0),
            op(1, "k", put("a"), 10, 11, put_ok(1)),
            op(1, "k", Input::Get, 12, 13, got(Some("a"), 1)),
            op(3, "k", Input::Get, 100, 101, got(Some("b"), 2)),
        ];
        assert_ok(&h);
        // Unknown cas and delete with a known ret but no output.
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            Operation {
                ret: Some(5),
                ..unknown(2, "k", cas(1, "b"), 2)
            },
            unknown(2, "k", Input::Delete, 6),
            op(3, "k", Input::Get, 100, 101, got(None, 3)),
        ];
        assert_ok(&h);
    }

    #[test]
    fn unknown_write_that_never_took_effect() {
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            unknown(2, "k", put("b"), 2),
            unknown(2, "k", Input::Get, 3),
            op(3, "k", Input::Get, 100, 101, got(Some("a"), 1)),
            op(3, "k", put("c"), 102, 103, put_ok(2)),
            op(3, "k", Input::Get, 104, 105, got(Some("c"), 2)),
        ];
        assert_ok(&h);
    }

    #[test]
    fn unknown_write_cannot_take_effect_before_its_call() {
        let h = vec![
            op(1, "k", Input::Get, 0, 1, got(Some("b"), 1)),
            unknown(2, "k", put("b"), 2),
        ];
        assert_illegal(&h);
    }

    #[test]
    fn unknown_write_cannot_take_effect_twice() {
        let h = vec![
            unknown(2, "k", put("b"), 0),
            op(1, "k", Input::Get, 10, 11, got(Some("b"), 1)),
            op(1, "k", Input::Get, 12, 13, got(Some("b"), 2)),
        ];
        assert_illegal(&h);
    }

    #[test]
    fn many_unknown_writes_that_never_took_effect() {
        // 40 unknown puts that never took effect must not blow up the search.
        let mut h = Vec::new();
        for c in 0..40 {
            h.push(unknown(100 + c, "k", put("lost"), c));
        }
        let mut t = 1000;
        for i in 1..=500u64 {
            h.push(op(1, "k", put("x"), t, t + 1, put_ok(i)));
            h.push(op(2, "k", Input::Get, t + 2, t + 3, got(Some("x"), i)));
            t += 4;
        }
        let start = Instant::now();
        assert_ok(&h);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn delete_on_absent_key() {
        let h = vec![
            op(1, "k", Input::Delete, 0, 1, deleted(false, 0)),
            op(1, "k", put("a"), 2, 3, put_ok(1)),
            op(1, "k", Input::Delete, 4, 5, deleted(true, 2)),
            op(2, "k", Input::Delete, 6, 7, deleted(false, 2)),
        ];
        assert_ok(&h);
    }

    #[test]
    fn cas_with_expect_zero_after_delete() {
        let h = vec![
            op(1, "k", cas(0, "a"), 0, 1, cas_out(true, 1)),
            op(1, "k", cas(0, "b"), 2, 3, cas_out(false, 1)),
            op(1, "k", Input::Delete, 4, 5, deleted(true, 2)),
            op(2, "k", cas(0, "c"), 6, 7, cas_out(true, 3)),
            op(2, "k", Input::Get, 8, 9, got(Some("c"), 3)),
        ];
        assert_ok(&h);
        // cas with expect == version swaps even if the value is deleted.
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            op(1, "k", Input::Delete, 2, 3, deleted(true, 2)),
            op(1, "k", cas(2, "b"), 4, 5, cas_out(true, 3)),
        ];
        assert_ok(&h);
    }

    #[test]
    fn multiple_keys_interleaved() {
        let h = vec![
            op(1, "a", put("1"), 0, 10, put_ok(1)),
            op(2, "b", put("2"), 1, 3, put_ok(1)),
            op(3, "a", Input::Get, 2, 4, got(None, 0)),
            op(2, "b", Input::Get, 5, 6, got(Some("2"), 1)),
            op(3, "c", Input::Delete, 5, 7, deleted(false, 0)),
            op(1, "b", cas(1, "3"), 11, 12, cas_out(true, 2)),
            op(3, "a", Input::Get, 11, 13, got(Some("1"), 1)),
            op(2, "c", cas(0, "x"), 14, 15, cas_out(true, 1)),
        ];
        assert_ok(&h);
        // The same history with one key broken is reported on that key.
        let mut bad = h.clone();
        bad[7].output = Some(cas_out(true, 2));
        let r = check_operations(&bad, TIMEOUT);
        match &r {
            CheckResult::Illegal { key, ops, .. } => {
                assert_eq!(key, b"c");
                assert_eq!(*ops, 2);
            }
            other => panic!("expected Illegal, got {other:?}"),
        }
    }

    #[test]
    fn equal_times_count_as_concurrent() {
        // The get returns at the instant the put is called.
        let h = vec![
            op(1, "k", Input::Get, 0, 5, got(Some("a"), 1)),
            op(2, "k", put("a"), 5, 6, put_ok(1)),
        ];
        assert_ok(&h);
    }

    // ----- non-linearizable histories -----

    #[test]
    fn stale_read_is_illegal() {
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            op(1, "k", put("b"), 2, 3, put_ok(2)),
            op(2, "k", Input::Get, 4, 5, got(Some("a"), 1)),
        ];
        assert_illegal(&h);
    }

    #[test]
    fn lost_acknowledged_write_is_illegal() {
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            op(2, "k", Input::Get, 2, 3, got(None, 0)),
        ];
        assert_illegal(&h);
    }

    #[test]
    fn write_applied_twice_is_illegal() {
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            op(2, "k", Input::Get, 2, 3, got(Some("a"), 2)),
        ];
        assert_illegal(&h);
    }

    #[test]
    fn cas_swapped_on_wrong_version_is_illegal() {
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            op(1, "k", put("b"), 2, 3, put_ok(2)),
            op(2, "k", cas(1, "c"), 4, 5, cas_out(true, 3)),
        ];
        assert_illegal(&h);
        // cas expect 0 must not swap on a present value.
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            op(2, "k", cas(0, "c"), 4, 5, cas_out(true, 2)),
        ];
        assert_illegal(&h);
    }

    #[test]
    fn delete_reporting_deleted_on_absent_key_is_illegal() {
        let h = vec![op(1, "k", Input::Delete, 0, 1, deleted(true, 1))];
        assert_illegal(&h);
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            op(1, "k", Input::Delete, 2, 3, deleted(true, 2)),
            op(2, "k", Input::Delete, 4, 5, deleted(true, 3)),
        ];
        assert_illegal(&h);
    }

    #[test]
    fn versions_going_backwards_is_illegal() {
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            op(2, "k", put("a"), 0, 10, put_ok(2)),
            op(3, "k", Input::Get, 2, 3, got(Some("a"), 2)),
            op(3, "k", Input::Get, 4, 5, got(Some("a"), 1)),
        ];
        assert_illegal(&h);
    }

    #[test]
    fn illegal_reports_longest_prefix() {
        let h = vec![
            op(1, "x", put("other"), 0, 1, put_ok(1)),
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            op(1, "k", put("b"), 2, 3, put_ok(2)),
            op(2, "k", Input::Get, 4, 5, got(Some("a"), 1)),
        ];
        let r = check_operations(&h, TIMEOUT);
        assert_eq!(
            r,
            CheckResult::Illegal {
                key: b"k".to_vec(),
                ops: 3,
                longest_prefix: vec![0, 1],
            }
        );
        let d = describe(&h, &r);
        assert!(d.contains("\"k\""), "{d}");
        assert!(
            d.contains("state after the prefix: version=2 value=\"b\""),
            "{d}"
        );
        assert!(d.contains("model: get(value=\"b\", version=2)"), "{d}");
    }

    #[test]
    fn check_key_reports_single_key() {
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            op(2, "k", Input::Get, 2, 3, got(None, 0)),
        ];
        let r = check_key(&h, Instant::now() + TIMEOUT);
        assert!(r.is_illegal(), "{r:?}");
        assert!(check_key(&h[..1], Instant::now() + TIMEOUT).is_ok());
    }

    // ----- randomized -----

    struct XorShift(u64);

    impl XorShift {
        fn new(seed: u64) -> Self {
            XorShift(splitmix64(seed) | 1)
        }

        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_input(rng: &mut XorShift, version_hint: u64) -> Input {
        let value = format!("v{}", rng.below(5)).into_bytes();
        match rng.below(10) {
            0..=2 => Input::Get,
            3..=5 => Input::Put { value },
            6 => Input::Delete,
            _ => Input::Cas {
                expect: if rng.below(3) == 0 {
                    0
                } else {
                    version_hint.saturating_sub(rng.below(2)) + rng.below(2)
                },
                value,
            },
        }
    }

    /// A random sequential (non-overlapping) history produced by the model.
    fn random_sequential_history(seed: u64, len: usize, keys: u64) -> Vec<Operation> {
        let mut rng = XorShift::new(seed);
        let mut states: BTreeMap<Vec<u8>, State> = BTreeMap::new();
        let mut t = 0;
        let mut h = Vec::new();
        for _ in 0..len {
            let key = format!("key{}", rng.below(keys)).into_bytes();
            let state = states.entry(key.clone()).or_default();
            let input = random_input(&mut rng, state.version);
            let (next, output) = step(state, &input);
            if let Some(next) = next {
                *state = next;
            }
            let call = t + rng.below(3);
            let ret = call + rng.below(3);
            t = ret + 1;
            h.push(Operation {
                client: rng.below(4),
                key,
                input,
                call,
                ret: Some(ret),
                output: Some(output),
            });
        }
        h
    }

    fn corrupt(output: &Output, rng: &mut XorShift) -> Output {
        match output.clone() {
            Output::Absent { live } => Output::Absent { live: !live },
            Output::Get { value, version } => match rng.below(3) {
                0 => Output::Get {
                    value,
                    version: version + 1,
                },
                1 => Output::Get {
                    value: match value {
                        Some(_) => None,
                        None => Some(b"v0".to_vec()),
                    },
                    version,
                },
                _ => Output::Get {
                    value: Some(b"never written".to_vec()),
                    version,
                },
            },
            Output::Put { version } => Output::Put {
                version: if version > 1 && rng.below(2) == 0 {
                    version - 1
                } else {
                    version + 1
                },
            },
            Output::Delete { deleted, version } => match rng.below(2) {
                0 => Output::Delete {
                    deleted: !deleted,
                    version,
                },
                _ => Output::Delete {
                    deleted,
                    version: version + 1,
                },
            },
            Output::Cas { swapped, version } => match rng.below(2) {
                0 => Output::Cas {
                    swapped: !swapped,
                    version,
                },
                _ => Output::Cas {
                    swapped,
                    version: version + 2,
                },
            },
            Output::Fenced { fence } => Output::Fenced { fence: fence + 1 },
            Output::Inspect {
                value,
                version,
                lease,
                fence,
            } => Output::Inspect {
                value,
                version,
                lease,
                fence: fence + 1,
            },
        }
    }

    #[test]
    fn random_sequential_histories_ok_and_corruptions_illegal() {
        for seed in 0..300 {
            let h = random_sequential_history(seed, 60, 3);
            assert_ok(&h);
            let mut rng = XorShift::new(seed ^ 0xdead_beef);
            let i = rng.below(h.len() as u64) as usize;
            let mut bad = h.clone();
            let original = bad[i].output.clone().unwrap();
            let corrupted = corrupt(&original, &mut rng);
            assert_ne!(original, corrupted);
            bad[i].output = Some(corrupted);
            let r = check_operations(&bad, TIMEOUT);
            match &r {
                CheckResult::Illegal { key, .. } => assert_eq!(key, &bad[i].key),
                other => panic!("seed {seed}: corrupted op {i} not detected: {other:?}"),
            }
        }
    }

    /// Simulated linearizable register: `clients` clients each issue ops
    /// back to back; every op takes effect at a random instant between its
    /// call and its return. Returns the history in call order.
    fn simulated_concurrent_history(seed: u64, ops: usize, clients: u64) -> Vec<Operation> {
        let mut rng = XorShift::new(seed);
        // (effect time, client, call, ret, input)
        let mut planned = Vec::with_capacity(ops);
        let mut clock = vec![0u64; clients as usize];
        for k in 0..ops {
            let c = (k as u64) % clients;
            let call = clock[c as usize] + rng.below(20);
            let effect = call + 1 + rng.below(100);
            let ret = effect + 1 + rng.below(100);
            clock[c as usize] = ret + 1;
            planned.push((effect, c, call, ret));
        }
        planned.sort();
        let mut state = State::default();
        let mut h = Vec::with_capacity(ops);
        for (_, client, call, ret) in planned {
            let input = random_input(&mut rng, state.version);
            let (next, output) = step(&state, &input);
            if let Some(next) = next {
                state = next;
            }
            h.push(Operation {
                client,
                key: b"k".to_vec(),
                input,
                call,
                ret: Some(ret),
                output: Some(output),
            });
        }
        h.sort_by_key(|op| (op.call, op.client));
        h
    }

    #[test]
    fn random_concurrent_histories_ok() {
        for seed in 0..50 {
            let h = simulated_concurrent_history(seed, 200, 5);
            assert_ok(&h);
            // Making some outcomes unknown keeps it linearizable.
            let mut rng = XorShift::new(seed + 1000);
            let mut h2 = h.clone();
            for op in h2.iter_mut() {
                if rng.below(10) == 0 {
                    op.ret = None;
                    op.output = None;
                }
            }
            assert_ok(&h2);
        }
    }

    #[test]
    fn performance_2000_ops_8_clients() {
        let h = simulated_concurrent_history(42, 2000, 8);
        let start = Instant::now();
        let r = check_operations(&h, Duration::from_secs(20));
        let elapsed = start.elapsed();
        assert!(r.is_ok(), "{r:?}\n{}", describe(&h, &r));
        assert!(
            elapsed < Duration::from_secs(5),
            "check took {elapsed:?}, expected a few seconds at most"
        );
    }

    #[test]
    fn performance_concurrent_corrupted_is_illegal() {
        let mut h = simulated_concurrent_history(7, 2000, 8);
        // A get in the middle returning a value nobody ever wrote.
        let i = h
            .iter()
            .enumerate()
            .skip(1000)
            .find(|(_, op)| op.input == Input::Get)
            .map(|(i, _)| i)
            .unwrap();
        h[i].output = Some(got(Some("never written"), 1));
        let start = Instant::now();
        let r = check_operations(&h, Duration::from_secs(20));
        assert!(r.is_illegal(), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn zero_timeout_reports_timeout() {
        let mut h = simulated_concurrent_history(3, 2000, 8);
        let r = check_operations(&h, Duration::ZERO);
        assert_eq!(r, CheckResult::Timeout { key: b"k".to_vec() });
        assert!(describe(&h, &r).contains("timed out"));
        // An illegal key in the same history wins over the timeout.
        h.push(op(1, "z", Input::Get, 0, 1, got(Some("x"), 1)));
        let r = check_operations(&h, Duration::ZERO);
        assert!(r.is_illegal(), "{r:?}");
    }

    #[test]
    fn write_history_writes_one_line_per_op() {
        let h = vec![
            op(1, "k", put("a"), 0, 1, put_ok(1)),
            unknown(2, "k", Input::Delete, 2),
            op(3, "k", Input::Get, 3, 4, got(Some("a"), 1)),
        ];
        let path = std::env::temp_dir().join(format!(
            "paxkv-lincheck-{}-{:?}.txt",
            std::process::id(),
            std::thread::current().id()
        ));
        write_history(&path, &h).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "1\t\"k\"\t0\t1\tput(value=\"a\")\tput(version=1)");
        assert_eq!(lines[1], "2\t\"k\"\t2\t?\tdelete()\t?");
        assert_eq!(
            lines[2],
            "3\t\"k\"\t3\t4\tget()\tget(value=\"a\", version=1)"
        );
    }

    #[test]
    fn verify_linearization_rejects_bad_orders() {
        let a = op(1, "k", put("a"), 0, 1, put_ok(1));
        let b = op(2, "k", Input::Get, 2, 3, got(Some("a"), 1));
        let ops = vec![&a, &b];
        assert!(verify_linearization(&ops, &[0, 1]).is_ok());
        assert!(verify_linearization(&ops, &[1, 0]).is_err());
        assert!(verify_linearization(&ops, &[0]).is_err());
        assert!(verify_linearization(&ops, &[0, 0, 1]).is_err());
    }
}
