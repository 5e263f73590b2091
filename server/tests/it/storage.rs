//! Storage: migrations and stream positions on both backends.

use grove_server::{Storage, StreamPosition, storage::Backend, testing::TestDb};

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
