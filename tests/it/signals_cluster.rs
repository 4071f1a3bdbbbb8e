//! Signals across nodes and crashes: a SCIM deactivation sent to node 1 refuses the
//! user's token on nodes 2 and 3 (with `[sync] ack = "all"`, before the SCIM call
//! returns), the SCIM state reads the same on every node, and sign-in is refused on a
//! node that never saw the SCIM call. And a node that crashed after writing a
//! deactivation but before revoking revokes when it starts again.

use crate::cluster::{Cluster, eventually, logged_in, refused_within};
use crate::common::*;
use crate::support::signals::*;
use portcullis::clock::{Clock, ManualClock, Ticker};
use portcullis::cluster::docs::{DocStore, NoReplication};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SCIM_TOKEN: &str = "cluster-scim-token-0a9b7c";

fn scim_table() -> String {
    let sha = hex::encode(sha2::Sha256::digest(SCIM_TOKEN.as_bytes()));
    format!("[scim]\nname = \"okta\"\ntoken_sha256 = \"{sha}\"\n")
}

fn scim_at(c: &Cluster, i: usize) -> ScimClient {
    let mut s = ScimClient::new(c.n(i).h().https_addr, c.n(i).port(), SCIM_TOKEN);
    // Okta's payloads, for a person the built-in users know.
    s.map(OKTA_EMAIL, BOB);
    s
}

async fn scim_revocations(g: &Gw) -> Vec<Value> {
    let (_, v) = g.admin(Method::GET, "/v1/revocations", None).await;
    v["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["actor"] == "scim:okta")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scim_deactivation_at_node_1_refuses_the_token_on_nodes_2_and_3() {
    let c = Cluster::start(3, &format!("ack = \"all\"\n\n{}", scim_table())).await;
    let (browser, _sid) = logged_in(&c, 1, BOB, BOB_PW).await;
    let mut s1 = scim_at(&c, 0);
    let r = s1.send(&fixture("okta_create_user")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let id = r.json["id"].as_str().unwrap().to_string();
    s1.map(OKTA_USER, &id);
    // The same SCIM state on every node, whichever node the IdP called.
    for i in 1..3 {
        let r = scim_at(&c, i).get(&format!("/Users/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "node {}: {}", i + 1, r.json);
        assert_eq!(r.json["userName"], BOB);
    }

    let t0 = Instant::now();
    let r = s1.send(&fixture("okta_deactivate_user")).await;
    let answered = t0.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // Every node refuses the token minted on node 2 as soon as the IdP has its answer.
    for i in 1..3 {
        let took = refused_within(&browser, c.n(i).port(), Duration::from_millis(50)).await;
        eprintln!(
            "node {}: refused {:?} after the SCIM answer ({answered:?} to answer)",
            i + 1,
            took
        );
    }
    for i in 0..3 {
        let rev = scim_revocations(c.n(i)).await;
        assert_eq!(rev.len(), 1, "node {}: {rev:?}", i + 1);
        assert_eq!(
            (rev[0]["target"].as_str(), rev[0]["external_id"].as_str()),
            (Some(BOB), Some(id.as_str()))
        );
        let r = scim_at(&c, i).get(&format!("/Users/{id}")).await;
        assert_eq!(r.json["active"], json!(false), "node {}", i + 1);
    }
    // Node 3 never saw the SCIM call: sign-in is refused there too, after the lockout.
    c.clock.advance(Duration::from_secs(61));
    let (b3, _) = client_with_jar(c.n(2).h().https_addr);
    let r = c.n(2).login(&b3, "echo.localhost", "/", BOB, BOB_PW).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("deactivated"));

    // Reactivated at node 3: node 1 lets them in again.
    let mut s3 = scim_at(&c, 2);
    s3.map(OKTA_USER, &id);
    let r = s3.send(&fixture("okta_put_user")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let (b1, _) = client_with_jar(c.n(0).h().https_addr);
    let r = c.n(0).login(&b1, "echo.localhost", "/", BOB, BOB_PW).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivation_written_before_a_crash_is_revoked_at_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let toml = config_text(&format!(
        "{}\n[[app]]\nname = \"other\"\nhosts = [\"other.localhost\"]\norigin = \"builtin:echo\"\nallow_emails = [\"*@okta.local\"]\n\n[[user]]\nemail = \"{OKTA_EMAIL}\"\npassword_hash = \"{}\"\n",
        scim_table(),
        hashes()[0]
    ));
    let clock = ManualClock::starting_now();
    let mut g = Gw::start_in(tmp.path(), &toml, clock.clone()).await;
    let s = ScimClient::new(g.h().https_addr, g.port(), SCIM_TOKEN);
    let r = s.send(&fixture("okta_create_user")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.json["id"].as_str().unwrap().to_string();
    let (browser, _) = client_with_jar(g.h().https_addr);
    let r = g
        .login(&browser, "other.localhost", "/", OKTA_EMAIL, DEMO_PW)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    g.stop().await;

    // What a crash between the SCIM write and its revocation leaves on disk: the user
    // inactive in the document log, no revocation.
    {
        let ticker = Arc::new(Ticker::new(clock.clone() as Arc<dyn Clock>));
        let path = tmp.path().join("state/docs.log");
        let docs = DocStore::open(&path, "test-1", ticker, Arc::new(NoReplication)).unwrap();
        let mut d = (*docs.get("scim.users", &id).expect("user doc")).clone();
        let old = d.version;
        d.version = docs.next_version();
        d.body["active"] = json!(false);
        d.body["version"] = json!(d.version);
        docs.put_local(d, Some(old)).unwrap();
    }
    clock.advance(Duration::from_millis(10));
    let g = Gw::start_in(tmp.path(), &toml, clock.clone()).await;
    let url = g.control_url("/v1/revocations");
    let token = g.admin_token();
    eventually(
        Duration::from_secs(5),
        "the missing revocation is taken",
        || {
            let (url, token) = (url.clone(), token.clone());
            async move {
                let v: Value = reqwest::Client::new()
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                v["revocations"].as_array().unwrap().iter().any(|r| {
                    r["actor"] == "scim:okta"
                        && r["target"] == OKTA_EMAIL
                        && r["reason"] == "scim: user deactivated (recovered)"
                })
            }
        },
    )
    .await;
    let rev = scim_revocations(&g).await;
    assert_eq!(rev.len(), 1, "{rev:?}");
    assert_eq!(rev[0]["external_id"], id.as_str());
    let r = xhr(&browser, &g.url("other.localhost", "/")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
