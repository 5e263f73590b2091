//! The link's datagram room against the largest traffic frame.

use super::*;
use crate::identity::NodeKeypair;
use crate::session::SESSION_MTU;
use crate::wire::{MAX_TRAFFIC_FRAME, TRAFFIC_MIN_HEADER};

/// A session packet always fits a traffic frame once its optional header parts are shed.
const _: () = assert!(SESSION_MTU as usize + TRAFFIC_MIN_HEADER <= MAX_TRAFFIC_FRAME);

/// Two real endpoints on loopback with the links' transport settings: a datagram of
/// [`MAX_TRAFFIC_FRAME`] bytes passes in one piece at the link's minimum MTU.
#[tokio::test]
async fn largest_traffic_frame_fits_one_link_datagram() {
    let (a, b) = (
        NodeKeypair::from_seed([1; 32]),
        NodeKeypair::from_seed([2; 32]),
    );
    let (ia, ib) = (Identity::new(&a).unwrap(), Identity::new(&b).unwrap());
    let ea = endpoint(&ia, "127.0.0.1:0".parse().unwrap()).unwrap();
    let eb = endpoint(&ib, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = eb.local_addr().unwrap();
    let accept = tokio::spawn(async move { eb.accept().await.unwrap().await.unwrap() });
    let mut config = tls::client_config(&ia, Expect::Key(b.public_key()), tls::PEER_ALPN).unwrap();
    config.transport_config(Arc::new(transport_config()));
    let conn = ea
        .connect_with(config, addr, tls::server_name())
        .unwrap()
        .await
        .unwrap();
    let server = accept.await.unwrap();
    // Only the minimum MTU is promised on every path; discovery may raise it later.
    let room = conn.max_datagram_size().unwrap();
    assert!(
        room >= MAX_TRAFFIC_FRAME,
        "a link datagram holds {room} bytes, a traffic frame may take {MAX_TRAFFIC_FRAME}"
    );
    conn.send_datagram(Bytes::from(vec![7u8; MAX_TRAFFIC_FRAME]))
        .unwrap();
    let got = server.read_datagram().await.unwrap();
    assert_eq!(got.len(), MAX_TRAFFIC_FRAME);
}
