//! Records on the ring in virtual time: lookups find what was published on a few hundred
//! nodes, before and after churn; hostile stores are refused where the record would be kept
//! and counted, without blaming the peers that passed them on; older peers never see a
//! record frame.

use std::path::PathBuf;
use std::time::Duration;

use grove_overlay::identity::{NodeKeypair, PublicKey};
use grove_overlay::router::{Config, DropReason};
use grove_overlay::sim::{self, Network, RecordOptions, SimOptions, TopologySpec};
use grove_overlay::wire::{
    CAP_GUIDED_SEARCH, CAP_PATH_SEARCH, CAP_SOURCE_ROUTING, CAP_TEARDOWN, Frame, FrameType,
    MAX_RECORD_VALUE, Record, Store,
};

const LINK: Duration = Duration::from_millis(5);

/// Lookups on a converged network of `spec`, then after 5 % of its nodes churned, each hold
/// to at least 99 % success.
#[track_caller]
fn check_lookups(spec: TopologySpec) {
    super::subscribe();
    let opts = SimOptions {
        pairs: 10,
        setups: 0,
        leave: false,
        idle_window: Duration::from_secs(1),
        records: Some(RecordOptions {
            publishers: 40,
            lookups: 200,
            churn: 0.05,
            ..RecordOptions::default()
        }),
        ..SimOptions::default()
    };
    let r = sim::run_with(&spec, 11, &opts).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
    let rec = r.records.expect("records ran");
    println!("{}: {rec:?}", r.name);
    assert_eq!(rec.refused, 0);
    assert!(
        rec.converged.success >= 99.0,
        "{}: {}% after convergence",
        r.name,
        rec.converged.success
    );
    assert!(rec.churned > 0);
    assert!(
        rec.after_churn.success >= 99.0,
        "{}: {}% after churn",
        r.name,
        rec.after_churn.success
    );
}

#[test]
fn lookups_succeed_on_a_scale_free_graph_before_and_after_churn() {
    check_lookups(TopologySpec::ScaleFree(300, 2));
}

#[test]
fn lookups_succeed_on_a_real_mesh_before_and_after_churn() {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/topologies/dn42.edges"
    ));
    if path.exists() {
        check_lookups(TopologySpec::File(path));
    } else {
        check_lookups(TopologySpec::RandomGeometric(250, 0.13));
    }
}

/// A line of `n` nodes, converged.
fn line(n: usize) -> Network {
    super::subscribe();
    let mut net = Network::new(21, Config::default());
    for _ in 0..n {
        net.add_node();
    }
    for i in 1..n {
        net.connect(i - 1, i, LINK);
    }
    net.run_for(Duration::from_secs(30));
    net
}

fn home(n: u8) -> NodeKeypair {
    NodeKeypair::from_seed([n; 32])
}

fn drops(net: &Network, reason: DropReason) -> u64 {
    (0..net.len())
        .map(|i| net.router(i).metrics().drops(reason))
        .sum()
}

fn held(net: &Network, key: &PublicKey) -> usize {
    (0..net.len()).filter(|i| net.holds_record(*i, key)).count()
}

/// A store from node `from`'s own key, as its first hop sees it.
fn store_from(net: &Network, from: usize, record: Record) -> Vec<u8> {
    Frame::Store(Store {
        hop_limit: 64,
        hops: 0,
        watermark: None,
        replica: 0,
        origin: net.key(from),
        record,
    })
    .encode()
}

/// Looks `key` up from node `at` and returns the sequence found.
fn lookup_seq(net: &mut Network, at: usize, key: PublicKey) -> Option<u64> {
    net.lookups.clear();
    let id = net.lookup(at, key);
    net.run_for(Duration::from_secs(5));
    net.lookups
        .iter()
        .find(|l| l.id == id)
        .and_then(|l| l.record.as_ref().map(|r| r.seq))
}

#[test]
fn forged_foreign_and_oversized_records_are_refused_and_counted() {
    let mut net = line(5);
    let h = home(1);
    let expires = net.unix_time() + 3600;
    // A forged signature: refused where it would be kept, and the peers that passed it on
    // are not blamed.
    let mut forged = Record::signed(&h, h.public_key(), 1, expires, b"x".to_vec()).unwrap();
    forged.value = b"y".to_vec();
    assert!(net.inject(0, 1, store_from(&net, 0, forged)));
    net.run_for(Duration::from_secs(2));
    assert_eq!(drops(&net, DropReason::RecordInvalid), 1);
    assert_eq!(held(&net, &h.public_key()), 0);
    assert_eq!(net.frame_errors, 0);

    // A record for someone else's key.
    let foreign = Record::signed(&home(2), h.public_key(), 1, expires, b"x".to_vec()).unwrap();
    assert!(net.inject(0, 1, store_from(&net, 0, foreign)));
    net.run_for(Duration::from_secs(2));
    assert_eq!(drops(&net, DropReason::RecordForbidden), 1);
    assert_eq!(held(&net, &h.public_key()), 0);
    assert_eq!(net.frame_errors, 0);

    // An oversized value does not even decode: the first hop refuses the frame.
    let ok = Record::signed(&h, h.public_key(), 1, expires, vec![0; 8]).unwrap();
    let mut bytes = store_from(&net, 0, ok);
    let len_at = 4 + 1 + 32 + 32 + 32 + 8 + 8;
    bytes[len_at..len_at + 2].copy_from_slice(&((MAX_RECORD_VALUE + 1) as u16).to_be_bytes());
    bytes.extend(vec![0; MAX_RECORD_VALUE + 1 - 8]);
    assert!(net.inject(0, 1, bytes));
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.router(1).metrics().drops(DropReason::Malformed), 1);
    assert_eq!(net.frame_errors, 1);
}

#[test]
fn a_replayed_older_record_does_not_replace_the_newer() {
    let mut net = line(6);
    let h = home(3);
    let expires = net.unix_time() + 3600;
    let old = Record::signed(&h, h.public_key(), 1, expires, b"old".to_vec()).unwrap();
    let new = Record::signed(&h, h.public_key(), 2, expires, b"new".to_vec()).unwrap();
    net.publish(5, old.clone()).unwrap();
    net.run_for(Duration::from_secs(2));
    net.publish(5, new).unwrap();
    net.run_for(Duration::from_secs(2));
    assert_eq!(lookup_seq(&mut net, 0, h.public_key()), Some(2));
    // Node 0 replays the old one toward every placement.
    for replica in 0..3 {
        let bytes = Frame::Store(Store {
            hop_limit: 64,
            hops: 0,
            watermark: None,
            replica,
            origin: net.key(0),
            record: old.clone(),
        })
        .encode();
        assert!(net.inject(0, 1, bytes));
    }
    net.run_for(Duration::from_secs(2));
    assert!(drops(&net, DropReason::RecordStale) >= 1);
    assert_eq!(lookup_seq(&mut net, 3, h.public_key()), Some(2));
}

#[test]
fn a_flood_of_stores_from_one_origin_is_rate_limited() {
    let mut net = line(4);
    let h = home(4);
    let expires = net.unix_time() + 3600;
    let limit = Config::default().stores_per_origin_per_sec;
    let flood = 10 * limit as usize;
    for seq in 1..=flood as u64 {
        let r = Record::signed(&h, h.public_key(), seq, expires, vec![0; 64]).unwrap();
        assert!(net.inject(0, 1, store_from(&net, 0, r)));
    }
    net.run_for(Duration::from_millis(500));
    let limited = net.router(1).metrics().drops(DropReason::OriginRateLimited);
    assert_eq!(limited, (flood - limit as usize) as u64);
    let stored: u64 = (0..net.len())
        .map(|i| net.router(i).metrics().records_stored)
        .sum();
    assert!(stored <= u64::from(limit), "{stored} stored");
    assert_eq!(net.frame_errors, 0);
}

#[test]
fn older_peers_never_receive_record_frames() {
    super::subscribe();
    let mut net = Network::new(5, Config::default());
    for _ in 0..4 {
        net.add_node();
    }
    let old_caps = CAP_SOURCE_ROUTING | CAP_PATH_SEARCH | CAP_TEARDOWN | CAP_GUIDED_SEARCH;
    net.connect(0, 1, LINK);
    net.connect(1, 2, LINK);
    net.connect_with(2, 3, LINK, old_caps);
    net.record_frames_of = Some(3);
    net.run_for(Duration::from_secs(30));
    let expires = net.unix_time() + 3600;
    for n in 10..20u8 {
        let h = home(n);
        let r = Record::signed(&h, h.public_key(), 1, expires, vec![n]).unwrap();
        net.publish(0, r).unwrap();
        net.lookup(1, h.public_key());
    }
    net.run_for(Duration::from_secs(10));
    let record_types = [FrameType::Store, FrameType::Lookup, FrameType::LookupReply];
    assert!(
        net.frames_seen
            .iter()
            .all(|b| !record_types.iter().any(|t| b.first() == Some(&(*t as u8)))),
        "an older peer was sent a record frame"
    );
    assert_eq!(net.frame_errors, 0);
}
