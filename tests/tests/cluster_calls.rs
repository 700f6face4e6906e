//! 1:1 calls between devices on different `palaver signaling` nodes (Redis
//! and PostgreSQL from scripts/test.sh): the call leader runs every call,
//! the other node forwards its devices' requests, and when the leader dies
//! the survivor takes over.

use palaver_client::proto::ErrorCode;
use palaver_client::proto::frames::{EndReason, Media, ServerFrame};
use palaver_tests::{PATIENCE, Server, expect_ended, fresh_schema, next_call, phone};
use std::time::{Duration, Instant};

/// Polls `node`'s log until it says it leads the calls.
fn wait_until_leader(node: &Server) {
    let start = Instant::now();
    while !node.log().contains("call leader changed this_node=true") {
        assert!(
            start.elapsed() < PATIENCE,
            "the node never became call leader:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_call_between_nodes_rings_connects_and_ends() {
    let schema = fresh_schema();
    let leader = Server::start_node(&schema, "node-a");
    wait_until_leader(&leader);
    let other = Server::start_node(&schema, "node-b");

    // Alice on the leader; Bob with one device on each node; Carol on the
    // other node.
    let (mut alice, a) = leader.device(&phone()).await;
    let bob_phone = phone();
    let (mut bob_b, bb) = other.device(&bob_phone).await;
    let (mut bob_a, _) = leader.device(&bob_phone).await;
    let (mut carol, _) = other.device(&phone()).await;

    let (call, _) = alice
        .call_offer(bb.account, Media::Audio, "v=0 offer")
        .await
        .unwrap();
    assert!(
        matches!(next_call(&mut alice).await, ServerFrame::CallRinging { call: c } if c == call)
    );
    for bob in [&mut bob_a, &mut bob_b] {
        match next_call(bob).await {
            ServerFrame::CallIncoming {
                call: c, from, sdp, ..
            } => assert_eq!((c, from, sdp.as_str()), (call, a.account, "v=0 offer")),
            other => panic!("expected call_incoming, got {other:?}"),
        }
    }

    // The device on the other node answers first: its request travels to
    // the leader, and the verdict comes back.
    bob_b.call_accept(call, "v=0 answer").await.unwrap();
    match next_call(&mut alice).await {
        ServerFrame::CallAccepted {
            call: c,
            device,
            sdp,
        } => {
            assert_eq!((c, device, sdp.as_str()), (call, bb.device, "v=0 answer"))
        }
        other => panic!("expected call_accepted, got {other:?}"),
    }
    assert!(matches!(
        next_call(&mut bob_a).await,
        ServerFrame::CallAnsweredElsewhere { .. }
    ));
    let late = bob_a.call_accept(call, "late").await.unwrap_err();
    assert_eq!(late.code(), Some(ErrorCode::AlreadyAnswered));

    // ICE both ways across the nodes.
    bob_b.call_ice(call, "{\"candidate\":\"b\"}").await.unwrap();
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallIce { from_device, candidate, .. }
            if from_device == bb.device && candidate.contains("\"b\"")
    ));
    alice.call_ice(call, "{\"candidate\":\"a\"}").await.unwrap();
    assert!(matches!(
        next_call(&mut bob_b).await,
        ServerFrame::CallIce { from_device, .. } if from_device == a.device
    ));

    // Busy is seen across nodes: Carol (other node) calls Bob, who talks
    // to Alice; Bob's device in the call gets a call-waiting notice.
    let (busy, _) = carol
        .call_offer(bb.account, Media::Audio, "v=0 carol")
        .await
        .unwrap();
    expect_ended(&mut carol, busy, EndReason::Busy).await;
    assert!(matches!(
        next_call(&mut bob_b).await,
        ServerFrame::CallWaiting { call: c, .. } if c == busy
    ));

    // A device outside the call cannot inject candidates from the other node.
    let e = carol.call_ice(call, "{}").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotInCall));

    alice.call_hangup(call).await.unwrap();
    expect_ended(&mut bob_b, call, EndReason::HungUp).await;
    let history = bob_b.call_history(10).await.unwrap();
    assert!(
        history
            .iter()
            .any(|h| h.call == call && h.answered_by == Some(bb.device)),
        "{history:?}"
    );
}

#[tokio::test]
async fn the_survivor_takes_over_calls_when_the_leader_dies() {
    let schema = fresh_schema();
    let mut leader = Server::start_node(&schema, "node-a");
    wait_until_leader(&leader);
    let other = Server::start_node(&schema, "node-b");
    let (mut alice, _) = other.device(&phone()).await;
    let (mut bob, b) = other.device(&phone()).await;

    leader.kill();
    // Until the dead leader's liveness lapses (cluster.registry_ttl, 2 s
    // here), requests fail with `internal` ("retry"); then the survivor
    // leads. Clients retry, as the error code tells them to.
    let deadline = Instant::now() + PATIENCE * 2;
    let call = loop {
        match alice.call_offer(b.account, Media::Audio, "v=0").await {
            Ok((call, _)) => break call,
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::Internal), "{e}");
                assert!(Instant::now() < deadline, "no node took over the calls");
            }
        }
    };
    assert!(
        matches!(next_call(&mut bob).await, ServerFrame::CallIncoming { call: c, .. } if c == call)
    );
    bob.call_accept(call, "v=0 answer").await.unwrap();
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallRinging { .. }
    ));
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallAccepted { call: c, .. } if c == call
    ));
    assert!(other.log().contains("call leader changed this_node=true"));
}

/// Offers a call and lets the callee's only device see it ring.
async fn ring(
    caller: &mut palaver_client::Client,
    callee: &mut palaver_client::Client,
    to: palaver_client::proto::AccountId,
) -> palaver_client::proto::CallId {
    let (call, _) = caller.call_offer(to, Media::Audio, "v=0").await.unwrap();
    assert!(matches!(
        next_call(caller).await,
        ServerFrame::CallRinging { .. }
    ));
    assert!(
        matches!(next_call(callee).await, ServerFrame::CallIncoming { call: c, .. } if c == call)
    );
    call
}

/// The survivor's log line when it loads the persisted calls.
const LOADED: &str = "taking over the persisted calls calls=";

#[tokio::test]
async fn calls_in_flight_survive_a_killed_leader() {
    // If node A's heartbeat stalls past the TTL while the calls are set up
    // (a starved machine), node B leads before the kill and the kill tests
    // nothing: set up again (the leadership move itself is covered by the
    // assertions of the next attempt).
    for attempt in 1..=3 {
        if in_flight_calls_across_a_leader_kill().await {
            return;
        }
        eprintln!("attempt {attempt}: leadership moved before the kill; again");
    }
    panic!("node A lost the call leadership before the kill three times");
}

/// Returns false when the precondition (node A leads until the kill)
/// did not hold.
async fn in_flight_calls_across_a_leader_kill() -> bool {
    let schema = fresh_schema();
    // A registry TTL longer than the usual 2 s: on the shared test machine
    // a whole process was seen to stall for 4 s, which hands the
    // leadership over before the kill.
    let env = [
        ("PALAVER__CALLS__RECONNECT_GRACE", "3s"),
        ("PALAVER__CLUSTER__REGISTRY_TTL", "8s"),
    ];
    let mut leader = Server::start_node_with(&schema, "node-a", &env);
    wait_until_leader(&leader);
    let other = Server::start_node_with(&schema, "node-b", &env);
    // On the survivor: Alice talks to Bob; Carol's call rings at Dave.
    let (mut alice, _) = other.device(&phone()).await;
    let (mut bob, b) = other.device(&phone()).await;
    let (mut carol, _) = other.device(&phone()).await;
    let (mut dave, d) = other.device(&phone()).await;
    // Gina, on the leader, talks to Harry on the survivor.
    let (mut gina, _) = leader.device(&phone()).await;
    let (mut harry, h) = other.device(&phone()).await;
    let talking = ring(&mut alice, &mut bob, b.account).await;
    bob.call_accept(talking, "v=0 answer").await.unwrap();
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallAccepted { .. }
    ));
    let ringing = ring(&mut carol, &mut dave, d.account).await;
    let lost = ring(&mut gina, &mut harry, h.account).await;
    harry.call_accept(lost, "v=0 answer").await.unwrap();
    assert!(matches!(
        next_call(&mut gina).await,
        ServerFrame::CallAccepted { .. }
    ));

    if other.log().contains("call leader changed this_node=true") {
        return false;
    }
    leader.kill();
    let killed = Instant::now();
    // Until the survivor leads (after the dead leader's liveness lapses),
    // requests fail with `internal`; clients retry.
    loop {
        match dave.call_accept(ringing, "v=0 answer").await {
            Ok(()) => break,
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::Internal), "{e}");
                assert!(killed.elapsed() < PATIENCE * 2, "no node took over");
            }
        }
    }
    eprintln!(
        "SIGKILL -> the ringing call answered: {:?}",
        killed.elapsed()
    );
    assert!(
        matches!(next_call(&mut carol).await, ServerFrame::CallAccepted { call: c, .. } if c == ringing)
    );
    alice.call_hangup(talking).await.unwrap();
    expect_ended(&mut bob, talking, EndReason::HungUp).await;
    carol.call_hangup(ringing).await.unwrap();
    expect_ended(&mut dave, ringing, EndReason::HungUp).await;
    // Gina died with the leader: Harry hears she dropped, then, after her
    // grace, that the call is lost.
    assert!(matches!(
        next_call(&mut harry).await,
        ServerFrame::CallPeer { call: c, connected: false } if c == lost
    ));
    expect_ended(&mut harry, lost, EndReason::ConnectionLost).await;
    let history = bob.call_history(10).await.unwrap();
    assert!(
        history
            .iter()
            .any(|e| e.call == talking && e.answered_by == Some(b.device)),
        "{history:?}"
    );
    // The survivor loaded the three calls from Redis.
    assert!(
        other.log().contains(&format!("{LOADED}3")),
        "{}",
        other.log()
    );
    true
}

#[tokio::test]
async fn a_party_on_a_dead_node_leaves_its_call_after_the_grace() {
    let schema = fresh_schema();
    let env = [("PALAVER__CALLS__RECONNECT_GRACE", "2s")];
    let leader = Server::start_node_with(&schema, "node-a", &env);
    wait_until_leader(&leader);
    let mut other = Server::start_node_with(&schema, "node-b", &env);
    // Gina on the node that dies (not the leader) talks to Harry on the
    // leader.
    let (mut gina, _) = other.device(&phone()).await;
    let (mut harry, h) = leader.device(&phone()).await;
    let call = ring(&mut gina, &mut harry, h.account).await;
    harry.call_accept(call, "v=0 answer").await.unwrap();
    assert!(matches!(
        next_call(&mut gina).await,
        ServerFrame::CallAccepted { .. }
    ));
    other.kill();
    // The dead node could not report Gina's disconnection: the leader's
    // sweep finds her connected nowhere (twice in a row), then her grace
    // runs out.
    let killed = Instant::now();
    assert!(matches!(
        next_call(&mut harry).await,
        ServerFrame::CallPeer { call: c, connected: false } if c == call
    ));
    expect_ended(&mut harry, call, EndReason::ConnectionLost).await;
    eprintln!(
        "SIGKILL -> connection_lost at Harry: {:?}",
        killed.elapsed()
    );
}
