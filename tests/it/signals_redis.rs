//! The cluster's documents (SCIM state, account flags) through a real `redis-server`:
//! what one node writes reaches another in one round, deletions (tombstones) too, and a
//! write made while Redis was away is put there once it is back; a catch-up sees another
//! node's writes at once and gives up quickly on a hung Redis.

use crate::support::redis::RedisServer;
use portcullis::clock::{Clock, SystemClock, Ticker};
use portcullis::cluster::accounts::{Accounts, Refusal};
use portcullis::cluster::docs::DocStore;
use portcullis::cluster::docs_redis::{RedisDocs, sync_round};
use portcullis::cluster::redis::{RedisConfig, RedisStore};
use portcullis::signals::scim::{Scim, ScimRequest};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn redis(r: &RedisServer) -> RedisStore {
    let mut c = RedisConfig::new(r.url());
    c.op_timeout = Duration::from_millis(1000);
    c.connect_timeout = Duration::from_millis(500);
    RedisStore::new(c, Arc::new(SystemClock)).expect("store")
}

fn node(dir: &Path, id: &str, redis: &RedisStore) -> (Arc<DocStore>, Accounts) {
    let ticker = Arc::new(Ticker::new(Arc::new(SystemClock) as Arc<dyn Clock>));
    let docs = Arc::new(
        DocStore::open(
            &dir.join(format!("{id}.docs.log")),
            id,
            ticker,
            Arc::new(RedisDocs::new(redis.clone())),
        )
        .unwrap(),
    );
    (docs.clone(), Accounts::new(docs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_travel_between_nodes_through_redis() {
    let mut r = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let (s1, s2) = (redis(&r), redis(&r));
    let (n1, a1) = node(tmp.path(), "n1", &s1);
    let (n2, a2) = node(tmp.path(), "n2", &s2);

    // A SCIM user created inactive on node 1, published to Redis with the write.
    let scim = a1.scim();
    let body = r#"{"userName":"ada@example.com","active":false}"#;
    let req = ScimRequest {
        method: http::Method::POST,
        path: "/Users",
        query: None,
        body: body.as_bytes(),
    };
    assert_eq!(
        Scim::default()
            .handle(&scim, &req, n1.next_version())
            .status,
        201
    );
    let sent = n1.publish(&scim.take_written()).await;
    assert_eq!((sent.acked, sent.peers), (1, 1));
    assert_eq!(a2.sign_in_refusal("ada@example.com"), None, "not yet");
    let (merged, _) = sync_round(&n2, &s2).await.unwrap();
    assert_eq!(merged, 1);
    assert_eq!(
        a2.sign_in_refusal("ada@example.com"),
        Some(Refusal::Inactive)
    );

    // A flag set on node 2 and cleared (a tombstone) on node 1.
    a2.set_disabled("bob@example.com", true, "ssf:okta", "risk")
        .await
        .unwrap();
    sync_round(&n1, &s1).await.unwrap();
    assert_eq!(
        a1.sign_in_refusal("bob@example.com"),
        Some(Refusal::Disabled {
            by: "ssf:okta".into()
        })
    );
    a1.set_disabled("bob@example.com", false, "ssf:okta", "")
        .await
        .unwrap();
    sync_round(&n2, &s2).await.unwrap();
    assert_eq!(a2.sign_in_refusal("bob@example.com"), None);

    // Redis away: the write holds here, and reaches Redis in the first round after.
    r.kill9();
    let sent = a1
        .set_disabled("eve@example.com", true, "ssf:okta", "risk")
        .await
        .unwrap();
    assert_eq!(sent.acked, 0);
    assert!(a1.disabled_by("eve@example.com").is_some());
    r.restart();
    let mut pushed = 0;
    for _ in 0..20 {
        if let Ok((_, p)) = sync_round(&n1, &s1).await {
            pushed = p;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pushed, 1);
    sync_round(&n2, &s2).await.unwrap();
    assert!(a2.disabled_by("eve@example.com").is_some());
    assert_eq!(
        n1.digest(),
        n2.digest(),
        "both nodes hold the same documents"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catching_up_sees_other_nodes_writes_at_once_and_never_waits_long_on_a_hung_redis() {
    let r = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let (s1, s2) = (redis(&r), redis(&r));
    let (n1, a1) = node(tmp.path(), "n1", &s1);
    let (n2, a2) = node(tmp.path(), "n2", &s2);
    n2.catch_up().await;

    // Written at node 1, seen at node 2 after one catch-up (no round ran).
    a1.set_disabled("ada@example.com", true, "ssf:okta", "risk")
        .await
        .unwrap();
    assert_eq!(a2.disabled_by("ada@example.com"), None);
    n2.catch_up().await;
    assert!(a2.disabled_by("ada@example.com").is_some());
    a1.set_disabled("ada@example.com", false, "ssf:okta", "")
        .await
        .unwrap();
    n2.catch_up().await;
    assert_eq!(
        a2.disabled_by("ada@example.com"),
        None,
        "the change, not just the first write"
    );

    // Redis hung: a catch-up gives up within its limit (the calls' own timeout is 1 s).
    r.pause();
    let t0 = std::time::Instant::now();
    n2.catch_up().await;
    let took = t0.elapsed();
    r.resume();
    assert!(
        took < portcullis::cluster::docs_redis::CATCH_UP_LIMIT + Duration::from_millis(200),
        "{took:?}"
    );
    drop(n1);
}
