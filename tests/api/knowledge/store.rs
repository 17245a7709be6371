//! `ASSET_STORE_URL`: uploaded bytes in object storage (the `object_store` crate's local
//! filesystem backend), read back by `process-asset`, de-duplicated like the rest, and
//! removed when the asset is deleted.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::*;
use crate::support::app::{OrgUsers, TestApp};

/// A directory of its own under the system's temporary one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("agents-api-assets-{}", Uuid::new_v4()));
        TempDir(dir)
    }

    fn url(&self) -> String {
        format!("file://{}/uploads", self.0.display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file under `dir`, recursively, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                found.push(relative.display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn files_go_to_the_object_store_and_leave_with_their_asset() {
    let dir = TempDir::new();
    let app = TestApp::builder()
        .with_jobs()
        .env("ASSET_STORE_URL", &dir.url())
        .spawn()
        .await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;
    let text = super::prose("warranty", 700);
    let asset = upload_and_wait(&app, org, admin, "warranty.txt", text.as_bytes()).await;
    assert_eq!(asset["status"], "indexed", "{asset}");
    let id = asset["id"].as_str().unwrap();

    // The bytes are one object keyed by ids only, not a row.
    let uploads = dir.0.join("uploads");
    assert_eq!(files_under(&uploads), [format!("{org}/{id}")]);
    let stored = std::fs::read(uploads.join(org.to_string()).join(id)).unwrap();
    assert_eq!(stored, text.as_bytes());
    let mut db = app.admin_db().await;
    let (storage, rows): (String, i64) = sqlx::query_as(
        "SELECT storage, (SELECT count(*) FROM knowledge_asset_files) FROM knowledge_assets",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert!(
        storage.ends_with(&format!("uploads/{org}/{id}")),
        "{storage}"
    );
    assert_eq!(rows, 0);
    let chunks = all_chunks(&app, org, member, id).await;
    assert!(chunks[0]["content"].as_str().unwrap().contains("warranty"));

    // The same bytes again: the same asset, no second object.
    let again = upload(&app, org, admin, "copy.txt", text.as_bytes())
        .await
        .expect(200)
        .body;
    assert_eq!(again["asset"]["id"], asset["id"]);
    assert_eq!(files_under(&uploads).len(), 1);

    // Reprocessing reads the object again.
    app.post(
        &format!("{}/{id}/reprocess", assets_path(org)),
        admin,
        serde_json::json!({}),
    )
    .await
    .expect(202);
    let again = wait_settled(&app, org, member, id).await;
    assert_eq!(again["status"], "indexed", "{again}");

    // Deleted: the object goes after the row.
    app.delete(&format!("{}/{id}", assets_path(org)), admin)
        .await
        .expect(204);
    eventually("the object is deleted", PATIENCE, || async {
        files_under(&uploads).is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_object_missing_from_the_store_fails_its_asset_readably() {
    let dir = TempDir::new();
    let app = TestApp::builder()
        .with_jobs()
        .env("ASSET_STORE_URL", &dir.url())
        .spawn()
        .await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;
    let asset = upload_and_wait(&app, org, admin, "gone.txt", b"Soon to vanish.").await;
    let id = asset["id"].as_str().unwrap();
    std::fs::remove_dir_all(dir.0.join("uploads").join(org.to_string())).unwrap();
    app.post(
        &format!("{}/{id}/reprocess", assets_path(org)),
        admin,
        serde_json::json!({}),
    )
    .await
    .expect(202);
    let failed = eventually("the reprocess fails", PATIENCE, || async {
        let asset = app
            .get(&format!("{}/{id}", assets_path(org)), admin)
            .await
            .expect(200)
            .body;
        (asset["status"] == "failed").then_some(asset)
    })
    .await;
    assert_eq!(failed["error"], "the asset's file is missing", "{failed}");
}
