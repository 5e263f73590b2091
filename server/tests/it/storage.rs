//! Storage: migrations and stream positions on both backends.

use grove_server::{
    Storage, StreamPosition,
    storage::{Backend, Batch, Change},
    testing::TestDb,
};

#[tokio::test]
async fn positions_survive_reopen_and_rollback() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let storage = Storage::connect(&db.url).await.expect("connect");
        assert_eq!(storage.notifier().current(), StreamPosition(0));

        let mut txn = storage.write().await.expect("write");
        assert_eq!(txn.next_position(), StreamPosition(1));
        assert_eq!(txn.next_position(), StreamPosition(2));
        txn.commit().await.expect("commit");
        assert_eq!(storage.notifier().current(), StreamPosition(2));

        // A rolled-back transaction hands its positions out again.
        let mut txn = storage.write().await.expect("write");
        assert_eq!(txn.next_position(), StreamPosition(3));
        drop(txn);
        let mut txn = storage.write().await.expect("write");
        assert_eq!(txn.next_position(), StreamPosition(3));
        txn.commit().await.expect("commit");
        storage.close().await;

        let storage = Storage::connect(&db.url).await.expect("reopen");
        assert_eq!(
            storage.notifier().current(),
            StreamPosition(3),
            "{backend:?}"
        );
        storage.close().await;
    }
}

#[tokio::test]
async fn a_write_dropped_or_failing_midway_leaves_nothing() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let storage = Storage::connect(&db.url).await.expect("connect");
        let count = async |storage: &Storage| -> i64 {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM room_aliases")
                .fetch_one(storage.pool())
                .await
                .expect("count");
            n
        };
        let insert = "INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)";

        // Dropped before commit: rolled back.
        let mut txn = storage.write().await.expect("write");
        sqlx::query(insert)
            .bind("#a:x")
            .bind("!r:x")
            .bind("@u:x")
            .execute(txn.conn())
            .await
            .expect("insert");
        drop(txn);
        assert_eq!(count(&storage).await, 0, "{backend:?}");

        // A batch whose second statement fails: neither row stays, the position is not taken.
        let mut txn = storage.write().await.expect("write");
        let position = txn.next_position();
        let mut batch = Batch::default();
        batch.push(insert, vec!["#b:x".into(), "!r:x".into(), "@u:x".into()]);
        batch.push(insert, vec!["#b:x".into(), "!r:x".into(), "@u:x".into()]);
        assert!(txn.commit_batch(batch).await.is_err(), "{backend:?}");
        assert_eq!(count(&storage).await, 0, "{backend:?}");
        assert!(storage.notifier().current() < position, "{backend:?}");

        // The next write works and commits.
        let mut txn = storage.write().await.expect("write");
        assert_eq!(txn.next_position(), position, "{backend:?}");
        let mut batch = Batch::default();
        batch.push(insert, vec!["#c:x".into(), "!r:x".into(), "@u:x".into()]);
        txn.commit_batch(batch).await.expect("commit");
        assert_eq!(count(&storage).await, 1, "{backend:?}");
        assert_eq!(storage.notifier().current(), position, "{backend:?}");
        storage.close().await;
    }
}

#[tokio::test]
async fn syncs_learn_which_kinds_of_change_happened_since_their_token() {
    let db = TestDb::new(Backend::Sqlite).await;
    let storage = Storage::connect(&db.url).await.expect("connect");
    let mut txn = storage.write().await.expect("write");
    txn.next_position_for(&[]);
    txn.commit().await.expect("commit");
    let opened = storage.notifier().current();
    storage.close().await;

    // After a restart everything before the opening position counts as changed.
    let storage = Storage::connect(&db.url).await.expect("reopen");
    let before = StreamPosition(opened.0 - 1);
    assert!(storage.changed_since(Change::Presence, before));
    assert!(!storage.changed_since(Change::Presence, opened));

    // A write that says what it changes marks only that.
    let mut txn = storage.write().await.expect("write");
    txn.next_position_for(&[Change::Ephemeral]);
    txn.commit().await.expect("commit");
    assert!(storage.changed_since(Change::Ephemeral, opened));
    assert!(!storage.changed_since(Change::AccountData, opened));
    assert!(!storage.changed_since(Change::DeviceLists, opened));

    // One that does not say marks everything; a rolled-back one marks nothing.
    let mut txn = storage.write().await.expect("write");
    txn.next_position_for(&[Change::ToDevice]);
    drop(txn);
    assert!(!storage.changed_since(Change::ToDevice, opened));
    let after_ephemeral = storage.notifier().current();
    let mut txn = storage.write().await.expect("write");
    txn.next_position();
    txn.commit().await.expect("commit");
    for kind in [
        Change::AccountData,
        Change::Ephemeral,
        Change::Presence,
        Change::ToDevice,
        Change::DeviceLists,
    ] {
        assert!(storage.changed_since(kind, after_ephemeral), "{kind:?}");
    }
    storage.close().await;
}
