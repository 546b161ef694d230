//! The CLI side of failover, against an `outpost-init --host-mode` device:
//! a node with several endpoints is reached over the first that answers,
//! past one that accepts TCP and then never speaks (a dead path behind a
//! NAT or QEMU's slirp), and the reconnect resumes the TLS session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::HostDevice;
use outpost::host::client::{Client, ENDPOINT_ATTEMPT};
use outpost::host::context::Node;
use outpost::wire::{Request, Response};

#[test]
fn endpoints_are_tried_in_order_and_the_session_resumes() {
    let dev = HostDevice::new("test").start();
    let tls = dev.tls("admin");
    // Accepts connections and never answers: the handshake must time out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Nothing listens here: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let node = Node {
        address: format!(
            "{closed_addr}, {},{}",
            silent.local_addr().unwrap(),
            dev.node.address
        ),
        server_name: dev.node.server_name.clone(),
    };

    let start = Instant::now();
    let mut first = Client::connect_with(tls.clone(), &node).unwrap();
    let took = start.elapsed();
    assert!(matches!(
        first.call(Request::Status).unwrap(),
        Response::Status(_)
    ));
    assert!(
        took >= ENDPOINT_ATTEMPT && took < ENDPOINT_ATTEMPT * 2,
        "the silent endpoint should cost one attempt: {took:?}"
    );
    assert!(!first.resumed());
    drop(first);

    let mut again = Client::connect_with(tls, &node).unwrap();
    assert!(again.resumed(), "the reconnect resumes the TLS session");
    assert!(matches!(again.call(Request::Ping).unwrap(), Response::Pong));

    // All dead: one error naming each endpoint.
    let dead = Node {
        address: format!("{closed_addr},{}", silent.local_addr().unwrap()),
        server_name: node.server_name.clone(),
    };
    let err = format!(
        "{:#}",
        Client::connect_with(dev.tls("admin"), &dead).err().unwrap()
    );
    assert!(
        err.contains(&closed_addr.to_string()) && err.contains("no endpoint answered"),
        "{err}"
    );
    // A single address behaves as before.
    assert!(Client::connect_with(dev.tls("admin"), &dev.node).is_ok());
}
