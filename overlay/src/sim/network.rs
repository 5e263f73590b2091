//! An in-process network of real [`Router`]s in virtual time: a discrete-event queue of frames
//! (delivered after each link's latency) and timer wake-ups. Tests and the simulator share it;
//! its verbs are `add_node`, `connect`, `disconnect`, `remove_node`, `restart_node`, `send`,
//! `publish`, `lookup`, `inject`, `run_for`, `run_until_idle` and `wait`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::identity::{NodeKeypair, PublicKey, SigCache};
use crate::router::{Config, Event, LookupId, PeerId, PublishError, Router};
use crate::wire::{FrameType, Record};

/// The Unix time (seconds) at virtual time zero: every router's wall clock starts here.
pub const SIM_UNIX_EPOCH: u64 = 1_800_000_000;

/// A record lookup some node finished.
#[derive(Debug, Clone)]
pub struct LookupResult {
    /// The node that looked up.
    pub node: usize,
    /// Its lookup id.
    pub id: LookupId,
    /// The key looked up.
    pub key: PublicKey,
    /// The record found, if any.
    pub record: Option<Record>,
    /// Hops to the answering node and back.
    pub hops: u8,
    /// Virtual time it ended.
    pub at: Duration,
}

/// Payload prefix of a ping the network answers automatically (with [`PONG`]).
pub const PING: u8 = 0xA1;
/// Payload prefix of an automatic answer.
pub const PONG: u8 = 0xA2;

/// A datagram the application of some node received.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Receiving node.
    pub to: usize,
    /// Sender's key.
    pub from: PublicKey,
    /// The datagram.
    pub payload: Vec<u8>,
    /// Overlay hops taken.
    pub hops: u8,
    /// Virtual time of arrival.
    pub at: Duration,
}

#[derive(Debug)]
enum Ev {
    Frame {
        to: usize,
        from: usize,
        /// The link's incarnation: frames sent on a link that has since gone are lost, even
        /// when the same two nodes link again.
        link: u64,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
    },
}

struct Scheduled {
    at: Duration,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: the heap pops the earliest event first.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct SimNode {
    router: Router,
    alive: bool,
    timer_at: Option<Duration>,
    bytes_out: u64,
    sent: Sent,
}

/// What one node has sent, sorted by what the frames are for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Bytes of upkeep that runs with no traffic: tree announcements, ring bootstraps and
    /// teardowns.
    pub upkeep_bytes: u64,
    /// Bytes spent setting flows up: path searches, their replies and route probes.
    pub setup_bytes: u64,
    /// Frames spent setting flows up.
    pub setup_frames: u64,
    /// Bytes of application datagrams, headers included.
    pub data_bytes: u64,
    /// Application datagram frames.
    pub data_frames: u64,
    /// Bytes of record stores, lookups and their replies.
    pub record_bytes: u64,
    /// Record frames.
    pub record_frames: u64,
    /// Bytes by frame type ([`FrameType::index`]), route probes apart at [`PROBE_KIND`].
    pub by_kind: [u64; KINDS],
}

/// Slot of [`Sent::by_kind`] that counts route probes (traffic frames carrying no data).
pub const PROBE_KIND: usize = FrameType::ALL.len();
/// Slots of [`Sent::by_kind`]: every frame type and the probes.
pub const KINDS: usize = PROBE_KIND + 1;

/// The name of a slot of [`Sent::by_kind`].
pub fn kind_name(kind: usize) -> &'static str {
    FrameType::ALL.get(kind).map_or("probe", |t| t.as_str())
}

impl Sent {
    /// Everything but application datagrams.
    pub fn protocol_bytes(&self) -> u64 {
        self.upkeep_bytes + self.setup_bytes
    }

    /// Counts one frame by its type byte (and, for traffic, its probe flag).
    fn count(&mut self, bytes: &[u8]) {
        let len = bytes.len() as u64;
        let ty = bytes.first().map(|b| FrameType::from_byte(*b));
        let kind = match ty {
            Some(Ok(FrameType::Traffic)) if crate::wire::is_probe(bytes) => Some(PROBE_KIND),
            Some(Ok(t)) => Some(t.index()),
            _ => None,
        };
        if let Some(slot) = kind.and_then(|k| self.by_kind.get_mut(k)) {
            *slot += len;
        }
        match ty {
            Some(Ok(FrameType::Traffic)) if !crate::wire::is_probe(bytes) => {
                self.data_bytes += len;
                self.data_frames += 1;
            }
            Some(Ok(FrameType::Store | FrameType::Lookup | FrameType::LookupReply)) => {
                self.record_bytes += len;
                self.record_frames += 1;
            }
            Some(Ok(
                FrameType::Traffic
                | FrameType::PathFind
                | FrameType::PathReply
                | FrameType::PathSeek
                | FrameType::PathAnswer,
            )) => {
                self.setup_bytes += len;
                self.setup_frames += 1;
            }
            _ => self.upkeep_bytes += len,
        }
    }
}

/// A simulated network.
pub struct Network {
    base: Instant,
    now: Duration,
    rng: ChaCha8Rng,
    config: Config,
    nodes: Vec<SimNode>,
    keys: HashMap<PublicKey, usize>,
    /// Latency and incarnation of each live link, both directions.
    links: HashMap<(usize, usize), (Duration, u64)>,
    next_link: u64,
    adj: Vec<Vec<usize>>,
    heap: BinaryHeap<Scheduled>,
    seq: u64,
    frames_in_flight: usize,
    /// Every application delivery so far, in order (the caller clears it as it likes).
    pub deliveries: Vec<Delivery>,
    /// Every record lookup finished so far, in order (the caller clears it as it likes).
    pub lookups: Vec<LookupResult>,
    /// Whether to answer [`PING`] datagrams with [`PONG`].
    pub auto_reply: bool,
    /// Frames a router refused.
    pub frame_errors: u64,
    /// Whether to keep the events other than deliveries in [`Network::events`].
    pub record_events: bool,
    /// Events other than deliveries, by node (when `record_events` is set).
    pub events: Vec<(usize, Event)>,
    /// Node whose every received frame is kept in [`Network::frames_seen`], if any.
    pub record_frames_of: Option<usize>,
    /// Frames received by `record_frames_of`, as they came off the link.
    pub frames_seen: Vec<Vec<u8>>,
    /// One memory of verified signatures for every router: each signed hop is checked once
    /// for the whole network, not once per node (the simulator's CPU and memory at 10,000
    /// nodes; the outcome of every check is the same).
    sig_cache: SigCache,
}

/// Entries of the network's shared signature memory: enough for every hop signature of a
/// 10,000-node network's tree at once.
const SHARED_SIG_CACHE: usize = 1 << 20;

impl Network {
    /// An empty network; `seed` fixes every key and every router's randomness.
    pub fn new(seed: u64, config: Config) -> Self {
        Network {
            base: Instant::now(),
            now: Duration::ZERO,
            rng: ChaCha8Rng::seed_from_u64(seed),
            config,
            nodes: Vec::new(),
            keys: HashMap::new(),
            links: HashMap::new(),
            next_link: 0,
            adj: Vec::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            frames_in_flight: 0,
            deliveries: Vec::new(),
            lookups: Vec::new(),
            auto_reply: true,
            frame_errors: 0,
            record_events: false,
            events: Vec::new(),
            record_frames_of: None,
            frames_seen: Vec::new(),
            sig_cache: SigCache::with_limit(SHARED_SIG_CACHE),
        }
    }

    /// Adds a node with a key drawn from the network's seed; returns its index.
    pub fn add_node(&mut self) -> usize {
        let seed: [u8; 32] = self.rng.r#gen();
        let rng_seed: u64 = self.rng.r#gen();
        let kp = NodeKeypair::from_seed(seed);
        let key = kp.public_key();
        let mut router = Router::new(kp, self.config.clone(), rng_seed, self.base + self.now);
        router.share_sig_cache(self.sig_cache.clone());
        router.set_unix_time(self.base + self.now, self.unix_time());
        let i = self.nodes.len();
        self.nodes.push(SimNode {
            router,
            alive: true,
            timer_at: None,
            bytes_out: 0,
            sent: Sent::default(),
        });
        self.keys.insert(key, i);
        self.adj.push(Vec::new());
        self.flush(i);
        i
    }

    /// Current virtual time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Number of nodes ever added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The router of node `i`.
    pub fn router(&self, i: usize) -> &Router {
        &self.nodes[i].router
    }

    /// Node `i`'s key.
    pub fn key(&self, i: usize) -> PublicKey {
        self.nodes[i].router.public_key()
    }

    /// The node with key `k`.
    pub fn index_of(&self, k: &PublicKey) -> Option<usize> {
        self.keys.get(k).copied()
    }

    /// Whether node `i` is still in the network.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }

    /// Bytes node `i` has sent.
    pub fn bytes_out(&self, i: usize) -> u64 {
        self.nodes[i].bytes_out
    }

    /// What node `i` has sent, by purpose.
    pub fn sent(&self, i: usize) -> Sent {
        self.nodes[i].sent
    }

    /// Links `a` and `b` with a one-way latency; both routers see the peer come up.
    pub fn connect(&mut self, a: usize, b: usize, latency: Duration) {
        self.connect_with(a, b, latency, crate::wire::CAPABILITIES);
    }

    /// As [`connect`](Self::connect), the link having negotiated only the capability bits
    /// `caps` (an older node on one end).
    pub fn connect_with(&mut self, a: usize, b: usize, latency: Duration, caps: u32) {
        if a == b || self.links.contains_key(&(a, b)) {
            return;
        }
        let now = self.base + self.now;
        let (ka, kb) = (self.key(a), self.key(b));
        // A router may refuse a peer (its peer limit): then the link is not made, as a driver
        // would close it.
        if self.nodes[a]
            .router
            .handle_peer_up_with(PeerId(b as u64), kb, caps, now)
            .is_err()
        {
            return;
        }
        if self.nodes[b]
            .router
            .handle_peer_up_with(PeerId(a as u64), ka, caps, now)
            .is_err()
        {
            self.nodes[a].router.handle_peer_down(PeerId(b as u64), now);
            self.flush(a);
            return;
        }
        self.next_link += 1;
        self.links.insert((a, b), (latency, self.next_link));
        self.links.insert((b, a), (latency, self.next_link));
        self.adj[a].push(b);
        self.adj[b].push(a);
        for (x, y) in [(a, b), (b, a)] {
            self.nodes[x]
                .router
                .handle_peer_latency(PeerId(y as u64), latency * 2, now);
        }
        self.flush(a);
        self.flush(b);
    }

    /// Cuts the link between `a` and `b`; frames in flight on it are lost.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        if self.links.remove(&(a, b)).is_none() {
            return;
        }
        self.links.remove(&(b, a));
        self.adj[a].retain(|x| *x != b);
        self.adj[b].retain(|x| *x != a);
        let now = self.base + self.now;
        for (x, y) in [(a, b), (b, a)] {
            self.nodes[x].router.handle_peer_down(PeerId(y as u64), now);
            self.flush(x);
        }
    }

    /// Node `i` leaves: every link to it goes down.
    pub fn remove_node(&mut self, i: usize) {
        let peers = self.adj[i].clone();
        for p in peers {
            self.disconnect(i, p);
        }
        self.nodes[i].alive = false;
    }

    /// Node `i` restarts as a new node with a fresh key in the same place: every link goes
    /// down, the old router is gone, and a new one links to the same neighbours with the same
    /// latencies. Returns the new key.
    pub fn restart_node(&mut self, i: usize) -> PublicKey {
        let peers: Vec<(usize, Duration)> = self.adj[i]
            .iter()
            .filter_map(|p| self.links.get(&(i, *p)).map(|(lat, _)| (*p, *lat)))
            .collect();
        for (p, _) in &peers {
            self.disconnect(i, *p);
        }
        let old = self.key(i);
        self.keys.remove(&old);
        let seed: [u8; 32] = self.rng.r#gen();
        let rng_seed: u64 = self.rng.r#gen();
        let kp = NodeKeypair::from_seed(seed);
        let key = kp.public_key();
        let now = self.base + self.now;
        let node = &mut self.nodes[i];
        node.router = Router::new(kp, self.config.clone(), rng_seed, now);
        node.router.share_sig_cache(self.sig_cache.clone());
        node.router
            .set_unix_time(now, SIM_UNIX_EPOCH + self.now.as_secs());
        node.alive = true;
        node.timer_at = None;
        self.keys.insert(key, i);
        self.flush(i);
        for (p, lat) in peers {
            if self.nodes[p].alive {
                self.connect(i, p, lat);
            }
        }
        key
    }

    /// Whether node `i` holds a ring route to the node keyed `to` that still leads there: each
    /// node on the way holds its own entry, under the same root, until `to` is reached. An
    /// entry whose way was torn down behind it (a teardown still in flight) does not count.
    pub fn ring_route_holds(&self, i: usize, to: &PublicKey) -> bool {
        let root = self.nodes[i].router.root();
        let mut at = i;
        // A route never visits a node twice; more hops than nodes is a loop.
        for _ in 0..self.nodes.len() {
            let r = &self.nodes[at].router;
            if r.root() != root {
                return false;
            }
            let Some(via) = r.ring_via(to) else {
                return false;
            };
            if via == *to {
                return true;
            }
            match self.keys.get(&via) {
                Some(&next) if self.nodes[next].alive => at = next,
                _ => return false,
            }
        }
        false
    }

    /// Neighbours of `i` over live links.
    pub fn neighbours(&self, i: usize) -> &[usize] {
        &self.adj[i]
    }

    /// Puts raw `bytes` on the link from node `from` to its neighbour `to`, as if `from`'s
    /// router had sent them (a hostile or broken node); counted in `from`'s bytes. Returns
    /// whether the link exists.
    pub fn inject(&mut self, from: usize, to: usize, bytes: Vec<u8>) -> bool {
        let Some((lat, link)) = self.links.get(&(from, to)).copied() else {
            return false;
        };
        self.nodes[from].bytes_out += bytes.len() as u64;
        self.nodes[from].sent.count(&bytes);
        self.schedule(
            self.now + lat,
            Ev::Frame {
                to,
                from,
                link,
                bytes,
            },
        );
        true
    }

    /// Node `from` sends a datagram to node `to`.
    pub fn send(&mut self, from: usize, to: usize, payload: Vec<u8>) {
        let k = self.key(to);
        let now = self.base + self.now;
        // Over-long payloads are a caller bug in a simulation; the router counts them.
        let _ = self.nodes[from].router.send(k, payload, now);
        self.flush(from);
    }

    /// The wall-clock time every router reads now, in seconds since the Unix epoch.
    pub fn unix_time(&self) -> u64 {
        SIM_UNIX_EPOCH + self.now.as_secs()
    }

    /// Whether node `i` keeps a live record under `key` for others.
    pub fn holds_record(&self, i: usize, key: &PublicKey) -> bool {
        let now = self.base + self.now;
        self.nodes[i].router.held_record(key, now).is_some()
    }

    /// Node `i` publishes a signed record.
    pub fn publish(&mut self, i: usize, record: Record) -> Result<(), PublishError> {
        let now = self.base + self.now;
        let r = self.nodes[i].router.publish(record, now);
        self.flush(i);
        r
    }

    /// Node `i` looks up the record under `key`; the result lands in [`Network::lookups`].
    pub fn lookup(&mut self, i: usize, key: PublicKey) -> LookupId {
        let now = self.base + self.now;
        let id = self.nodes[i].router.lookup(key, now);
        self.flush(i);
        id
    }

    /// Runs events until virtual time `now + d`.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.heap.peek().is_some_and(|s| s.at <= until) {
            self.step();
        }
        self.now = until;
    }

    /// Runs until no frame is in flight (timers may remain), at most `max` of virtual time;
    /// true if it went idle.
    pub fn run_until_idle(&mut self, max: Duration) -> bool {
        let until = self.now + max;
        while self.frames_in_flight > 0 {
            match self.heap.peek() {
                Some(s) if s.at <= until => self.step(),
                _ => break,
            }
        }
        self.frames_in_flight == 0
    }

    /// Runs until `pred` holds, checking every `every`, at most `max`; returns the virtual
    /// time it took, or `None`.
    pub fn wait(
        &mut self,
        every: Duration,
        max: Duration,
        mut pred: impl FnMut(&Network) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        loop {
            if pred(self) {
                return Some(self.now - start);
            }
            if self.now - start >= max {
                return None;
            }
            self.run_for(every);
        }
    }

    fn step(&mut self) {
        let Some(s) = self.heap.pop() else {
            return;
        };
        self.now = self.now.max(s.at);
        let now = self.base + self.now;
        match s.ev {
            Ev::Frame {
                to,
                from,
                link,
                bytes,
            } => {
                self.frames_in_flight -= 1;
                if !self.nodes[to].alive
                    || self.links.get(&(from, to)).is_none_or(|(_, l)| *l != link)
                {
                    return;
                }
                if self.record_frames_of == Some(to) {
                    self.frames_seen.push(bytes.clone());
                }
                if self.nodes[to]
                    .router
                    .handle_frame(PeerId(from as u64), &bytes, now)
                    .is_err()
                {
                    self.frame_errors += 1;
                }
                self.flush(to);
            }
            Ev::Timer { node } => {
                let n = &mut self.nodes[node];
                if !n.alive || n.timer_at != Some(s.at) {
                    return;
                }
                n.timer_at = None;
                n.router.handle_timeout(now);
                self.flush(node);
            }
        }
    }

    fn schedule(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        if matches!(ev, Ev::Frame { .. }) {
            self.frames_in_flight += 1;
        }
        self.heap.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    /// Drains node `i`'s outputs: frames onto links, events to the application, its timer.
    fn flush(&mut self, i: usize) {
        loop {
            while let Some(tx) = self.nodes[i].router.poll_transmit() {
                let j = tx.peer.0 as usize;
                if let Some((lat, link)) = self.links.get(&(i, j)).copied() {
                    self.nodes[i].bytes_out += tx.bytes.len() as u64;
                    self.nodes[i].sent.count(&tx.bytes);
                    self.schedule(
                        self.now + lat,
                        Ev::Frame {
                            to: j,
                            from: i,
                            link,
                            bytes: tx.bytes,
                        },
                    );
                }
            }
            let mut any = false;
            while let Some(ev) = self.nodes[i].router.poll_event() {
                any = true;
                if self.record_events && !matches!(ev, Event::Delivered { .. }) {
                    self.events.push((i, ev.clone()));
                }
                if let Event::LookupDone {
                    id,
                    key,
                    record,
                    hops,
                } = &ev
                {
                    self.lookups.push(LookupResult {
                        node: i,
                        id: *id,
                        key: *key,
                        record: record.clone(),
                        hops: *hops,
                        at: self.now,
                    });
                }
                if let Event::Delivered {
                    from,
                    payload,
                    hops,
                } = ev
                {
                    if self.auto_reply && payload.first() == Some(&PING) {
                        let mut reply = payload.clone();
                        reply[0] = PONG;
                        let now = self.base + self.now;
                        let _ = self.nodes[i].router.send(from, reply, now);
                    }
                    self.deliveries.push(Delivery {
                        to: i,
                        from,
                        payload,
                        hops,
                        at: self.now,
                    });
                }
            }
            if !any {
                break;
            }
        }
        if let Some(t) = self.nodes[i].router.poll_timeout() {
            let at = t.saturating_duration_since(self.base).max(self.now);
            if self.nodes[i].timer_at != Some(at) {
                self.nodes[i].timer_at = Some(at);
                self.schedule(at, Ev::Timer { node: i });
            }
        }
    }
}
