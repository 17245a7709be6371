//! Every format indexed end to end by the real job: the chunks say what the file says,
//! without markup, with pages and headings kept; a file that cannot be read fails the
//! asset with a readable error and the worker carries on.

use serde_json::Value;

use super::*;
use crate::support::app::{OrgUsers, TestApp};
use crate::support::documents;

fn contents(chunks: &[Value]) -> String {
    chunks
        .iter()
        .map(|c| c["content"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn text_markdown_and_html_are_indexed_without_markup() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;

    let text = "Plain notes.\r\n\r\nСкидка для постоянных клиентов составляет десять процентов.";
    let asset = upload_and_wait(&app, org, admin, "notes", text.as_bytes()).await;
    assert_eq!(
        (asset["status"].as_str(), asset["format"].as_str()),
        (Some("indexed"), Some("text"))
    );
    let chunks = all_chunks(&app, org, member, asset["id"].as_str().unwrap()).await;
    assert!(contents(&chunks).contains("Скидка для постоянных клиентов"));
    assert!(chunks[0]["token_count"].as_i64().unwrap() > 0);

    let markdown =
        "# Delivery\n\nWe deliver on **Tuesdays**.\n\n## Returns\n\nReturns take a week.\n";
    let asset = upload_and_wait(&app, org, admin, "faq.md", markdown.as_bytes()).await;
    assert_eq!(asset["format"], "markdown");
    let chunks = all_chunks(&app, org, member, asset["id"].as_str().unwrap()).await;
    let all = contents(&chunks);
    assert!(
        all.contains("Tuesdays") && all.contains("Returns take a week"),
        "{all}"
    );
    assert!(
        chunks.iter().any(|c| c["metadata"]["heading"].is_string()),
        "headings are kept: {chunks:?}"
    );

    let html = r#"<!DOCTYPE html><html><head><title>Shop</title>
        <style>body { color: red; }</style><script>alert("steal")</script></head>
        <body><h1>Opening hours</h1><p>We are open <b>daily</b> from 9&nbsp;to 18 &amp; on holidays.</p>
        <noscript>enable scripts</noscript></body></html>"#;
    let asset = upload_and_wait(&app, org, admin, "page.html", html.as_bytes()).await;
    assert_eq!(asset["format"], "html");
    let all = contents(&all_chunks(&app, org, member, asset["id"].as_str().unwrap()).await);
    assert!(all.contains("We are open daily from 9"), "{all}");
    assert!(all.contains("& on holidays"), "entities decoded: {all}");
    for markup in ["<", "color: red", "alert", "steal", "enable scripts"] {
        assert!(!all.contains(markup), "{markup:?} leaked into {all:?}");
    }
}

#[tokio::test]
async fn pdf_pages_and_docx_headings_are_kept() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers {
        org, admin, member, ..
    } = app.org_with_roles().await;

    let pages = [
        "Chapter one describes the warranty terms.",
        "Chapter two describes the delivery zones.",
        "Chapter three lists the support phone numbers.",
    ];
    let pdf = documents::pdf(&pages);
    let asset = upload_and_wait(&app, org, admin, "guide.pdf", &pdf).await;
    assert_eq!(
        (asset["status"].as_str(), asset["format"].as_str()),
        (Some("indexed"), Some("pdf")),
        "{asset}"
    );
    assert_eq!(
        asset["content_type"], "application/octet-stream",
        "as the client sent it"
    );
    let chunks = all_chunks(&app, org, member, asset["id"].as_str().unwrap()).await;
    let all = contents(&chunks);
    for page in pages {
        assert!(all.contains(page), "{page:?} missing from {all:?}");
    }
    assert_eq!(chunks[0]["metadata"]["page"], 1, "{chunks:?}");
    let found = search(
        &app,
        org,
        member,
        serde_json::json!({"query": "support phone numbers"}),
    )
    .await
    .expect(200)
    .body;
    assert_eq!(found["data"][0]["filename"], "guide.pdf");

    let docx = documents::docx(&[
        (Some("Heading1"), "Installation"),
        (None, "The installer visits within three days."),
        (Some("Heading2"), "Prices"),
        (None, "Installation is free with every purchase."),
    ]);
    let asset = upload_and_wait(&app, org, admin, "install.docx", &docx).await;
    assert_eq!(
        (asset["status"].as_str(), asset["format"].as_str()),
        (Some("indexed"), Some("docx")),
        "{asset}"
    );
    let chunks = all_chunks(&app, org, member, asset["id"].as_str().unwrap()).await;
    let all = contents(&chunks);
    assert!(
        all.contains("The installer visits within three days."),
        "{all}"
    );
    assert!(
        all.contains("Installation is free with every purchase."),
        "{all}"
    );
    assert!(!all.contains("w:p"), "no XML in {all}");
    assert!(
        chunks.iter().any(|c| c["metadata"]["heading"].is_string()),
        "{chunks:?}"
    );
}

#[tokio::test]
async fn unreadable_files_fail_the_asset_readably_and_the_worker_goes_on() {
    let app = TestApp::builder().with_jobs().spawn().await;
    let OrgUsers { org, admin, .. } = app.org_with_roles().await;

    // Judged a PDF by its header, but nothing after it is.
    let broken = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage garbage\n%%EOF";
    let asset = upload_and_wait(&app, org, admin, "broken.pdf", broken).await;
    assert_eq!(asset["status"], "failed", "{asset}");
    let error = asset["error"].as_str().unwrap();
    assert!(
        error.to_lowercase().contains("pdf"),
        "a readable reason: {error}"
    );
    assert_eq!(asset["progress"]["stage"], "failed");
    assert_eq!(asset["chunks_count"], 0);

    // Only whitespace: no text to index.
    let asset = upload_and_wait(&app, org, admin, "blank.txt", b"   \n\n\t  \n").await;
    assert_eq!(asset["status"], "failed", "{asset}");
    assert!(
        asset["error"].as_str().unwrap().contains("no text"),
        "{asset}"
    );

    // The worker is still there for the next file.
    let asset = upload_and_wait(&app, org, admin, "fine.txt", b"This one is fine.").await;
    assert_eq!(asset["status"], "indexed", "{asset}");
}
