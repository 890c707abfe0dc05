//! Several replicas on one PostgreSQL database acting as one service (DESIGN §6,
//! issue "Scale out"): the real binaries, each test on a database of its own.
//! Skipped (passing, with a message) without `MEDIALINK_TEST_POSTGRES_URL`.
#![cfg(feature = "postgres")]

mod common;
mod pgutil;

use std::time::{Duration, Instant};

use common::upstream::{Reply, Upstream, fixture};
use common::{Server, TOKEN, create, get_json, http};
use pgutil::TestDb;
use serde_json::json;
use sqlx::Connection;

fn replica(db: &TestDb) -> Server {
    Server::start(&["--store", &db.url, "--allow-upstream-cidr", "127.0.0.1/32"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_on_one_replica_served_by_the_other_and_a_delete_stops_both_within_a_second() {
    let Some(db) = TestDb::create("repl_serve").await else {
        return;
    };
    let (a, b) = (replica(&db), replica(&db));
    let up = Upstream::start().await;
    up.set(
        "/p.jpg",
        Reply::Bytes(200, "image/jpeg", fixture("photo.jpg")),
    );
    let (st, link) = create(&a, json!({"url": up.url("/p.jpg"), "kind": "image"})).await;
    assert_eq!(st, 201);
    let id = link["id"].as_str().unwrap().to_owned();
    let on_b = b.url(&format!("/m/{id}.jpg"));
    let res = http().get(&on_b).send().await.unwrap();
    assert_eq!(res.status(), 200, "B serves what A created");
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        fixture("photo.jpg").as_slice()
    );
    let (st, rec) = get_json(&b, &format!("/api/v1/links/{id}")).await;
    assert_eq!(
        (st, rec["url"].as_str()),
        (200, Some(up.url("/p.jpg").as_str()))
    );

    // B now holds the link in its hot map and the bytes in its cache.
    let res = http()
        .delete(a.url(&format!("/api/v1/links/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let deleted_at = Instant::now();
    loop {
        let st = http().get(&on_b).send().await.unwrap().status();
        if st == 404 {
            break;
        }
        assert!(
            deleted_at.elapsed() < Duration::from_secs(1),
            "B still serves {id} after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = deleted_at.elapsed();
    eprintln!("B stopped serving after {took:?}");
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_url_over_two_replicas_give_one_id() {
    let Some(db) = TestDb::create("repl_race").await else {
        return;
    };
    let (a, b) = (replica(&db), replica(&db));
    let (ids, created) = common::create_same_url_concurrently(
        &[a.base.clone(), b.base.clone()],
        "https://cdn.example.com/same.jpg?sig=1",
        16,
    )
    .await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(created, 1);
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_one_replica_under_load_loses_no_acknowledged_link() {
    let Some(db) = TestDb::create("repl_kill").await else {
        return;
    };
    let (mut a, b) = (replica(&db), replica(&db));
    let load = common::CreateLoad::start(&[a.base.clone(), b.base.clone()], 8);
    load.wait_for(100).await;
    a.kill();
    // The clients of A stop at their next request; B's keep going a little.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = load.stop().await;
    assert!(acked.len() > 20, "load made links ({})", acked.len());
    let a2 = a.restart();
    for (url, id) in &acked {
        let (st, got) = get_json(&a2, &format!("/api/v1/links/{id}")).await;
        assert_eq!(st, 200, "acknowledged {id} lost");
        assert_eq!(&got["url"], url);
    }
    drop((a2, b));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_503_with_warm_media_still_served_and_heals_by_itself() {
    let Some(db) = TestDb::create("repl_outage").await else {
        return;
    };
    let a = replica(&db);
    let up = Upstream::start().await;
    up.set(
        "/w.jpg",
        Reply::Bytes(200, "image/jpeg", fixture("photo.jpg")),
    );
    let (_, link) = create(&a, json!({"url": up.url("/w.jpg"), "kind": "image"})).await;
    let media = a.url(&format!("/m/{}.jpg", link["id"].as_str().unwrap()));
    assert_eq!(http().get(&media).send().await.unwrap().status(), 200);

    // Keep PostgreSQL's door shut: refuse new connections, terminate the open ones.
    let mut admin = sqlx::PgConnection::connect(&db.admin_url).await.unwrap();
    let name = db.name.clone();
    sqlx::raw_sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ))
    .execute(&mut admin)
    .await
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if http().get(a.url("/readyz")).send().await.unwrap().status() == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "readyz never went 503");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let res = http()
        .post(a.url("/api/v1/links"))
        .bearer_auth(TOKEN)
        .json(&json!({"url": "https://cdn.example.com/during-outage.jpg"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["code"],
        "store_unavailable"
    );
    let warm = http().get(&media).send().await.unwrap();
    assert_eq!(warm.status(), 200, "warm media keeps being served");
    assert_eq!(
        warm.bytes().await.unwrap().as_ref(),
        fixture("photo.jpg").as_slice()
    );

    sqlx::raw_sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    let back = Instant::now();
    loop {
        let ready = http().get(a.url("/readyz")).send().await.unwrap().status() == 200;
        let (st, _) = create(
            &a,
            json!({"url": "https://cdn.example.com/after-outage.jpg"}),
        )
        .await;
        if ready && (st == 201 || st == 200) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "not recovered within 5 s of the store's return"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("recovered {:?} after the store returned", back.elapsed());
    let _ = admin.close().await;
    drop(a);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_from_sqlite_and_import_into_postgres_keeps_ids_and_short_urls() {
    let Some(db) = TestDb::create("repl_move").await else {
        return;
    };
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let public = ["--public-url", "https://m.example.com", "--id-key", key];
    let mut lite = Server::start(&public);
    let items: Vec<_> = (0..300)
        .map(|i| json!({"url": format!("https://cdn.example.com/move/{i}.{}", ["jpg", "ogg", "png"][i % 3])}))
        .collect();
    let (st, made) = create(&lite, json!(items)).await;
    assert_eq!(st, 201);
    let dir = lite.data_dir.clone();
    let file = dir.join("links.jsonl");
    lite.kill(); // keeps its data dir
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(common::bin())
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(vec![
        "export".into(),
        "--data-dir".into(),
        dir.display().to_string(),
        file.display().to_string(),
    ]);
    run(vec![
        "import".into(),
        "--store".into(),
        db.url.clone(),
        file.display().to_string(),
    ]);
    let mut args = vec!["--store", db.url.as_str()];
    args.extend_from_slice(&public);
    let pg = Server::start(&args);
    for link in made.as_array().unwrap() {
        let (st, got) = get_json(
            &pg,
            &format!("/api/v1/links/{}", link["id"].as_str().unwrap()),
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(got["url"], link["url"]);
        assert_eq!(
            got["short_url"], link["short_url"],
            "same id, same short URL"
        );
    }
    // Same key: creating a known URL on PostgreSQL returns the id SQLite gave it.
    let (st, again) = create(&pg, items[7].clone()).await;
    assert_eq!((st, &again["id"]), (200, &made[7]["id"]));
    drop((pg, lite));
    db.drop_db().await;
}
