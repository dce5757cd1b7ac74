//! Assets against real PostgreSQL and a real (private) clamd: uploads,
//! processing (scan, thumbnail, text), search, signed downloads, bad input,
//! and a clamd outage; and the same against a real S3-compatible server
//! (moto, `tests/support/s3.rs`) with `storage.backend = "s3"`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use boardroom::assets::token::DownloadSigner;
use boardroom_tests::{
    SendExpect, TEST_JWT_SECRET, TestApp,
    clamd::{Clamd, EICAR},
    s3::{self, Moto},
    s3s::VerifyingS3,
};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

struct Env {
    app: TestApp,
    _storage: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn spawn(
    clamd: Option<&Clamd>,
    configure: impl FnOnce(&mut boardroom::config::Settings),
) -> Env {
    let dir = std::env::temp_dir().join(format!(
        "boardroom-assets-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let path = dir.display().to_string();
    let url = clamd.map(Clamd::url).unwrap_or_default();
    let app = TestApp::spawn_with(|s| {
        s.storage.path = path;
        s.scanner.clamd_url = url;
        s.assets.poll_interval = Duration::from_millis(100);
        s.assets.retry_base_delay = Duration::from_millis(100);
        s.assets.retry_max_delay = Duration::from_millis(500);
        configure(s);
    })
    .await;
    Env {
        app,
        _storage: TempDir(dir),
    }
}

fn form(org: &str, file_name: &str, bytes: Vec<u8>) -> Form {
    Form::new()
        .text("organizationId", org.to_owned())
        .part("file", Part::bytes(bytes).file_name(file_name.to_owned()))
}

async fn upload(app: &TestApp, token: &str, form: Form) -> reqwest::Response {
    app.client
        .post(app.url("/v1/assets"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn upload_ok(app: &TestApp, token: &str, form: Form) -> Value {
    let response = upload(app, token, form).await;
    boardroom_tests::expect_status(response, 201).await["data"].clone()
}

/// Polls the asset until its processing leaves `pending` (or 30 s pass).
async fn processed(app: &TestApp, token: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let asset = app
            .get(&format!("/v1/assets/{id}"), Some(token))
            .expect_status(200)
            .await["data"]
            .clone();
        if asset["processingStatus"] != "pending" || started.elapsed() > Duration::from_secs(30) {
            return asset;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A one-page PDF whose page shows `text` (Helvetica), with a correct xref.
fn pdf(text: &str) -> Vec<u8> {
    let stream = format!("BT /F1 18 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn docx(paragraphs: &[&str]) -> Vec<u8> {
    use std::io::Write;
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("word/document.xml", options).unwrap();
        let body: String = paragraphs
            .iter()
            .map(|p| format!("<w:p><w:r><w:t>{p}</w:t></w:r></w:p>"))
            .collect();
        write!(zip, r#"<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>"#).unwrap();
        zip.start_file("[Content_Types].xml", options).unwrap();
        write!(zip, "<Types/>").unwrap();
        zip.finish().unwrap();
    }
    out.into_inner()
}

async fn download_url(app: &TestApp, token: &str, id: &str, expires_in: i64) -> reqwest::Response {
    app.post_json(
        &format!("/v1/assets/{id}/download-url"),
        token,
        &json!({"expiresIn": expires_in}),
    )
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn a_clean_pdf_is_scanned_extracted_found_and_downloaded() {
    let clamd = Clamd::start();
    let env = spawn(Some(&clamd), |_| {}).await;
    let app = &env.app;
    let (token, org) = app.owner_with_org("pdf-org").await;
    let bytes = pdf("Quarterly treasury report for the audit committee");
    let created = upload_ok(
        app,
        &token,
        form(&org, "Q3 report.pdf", bytes.clone())
            .text("title", "Q3 board pack")
            .text("tags", "Finance, q3")
            .text("category", "reports"),
    )
    .await;
    assert_eq!(created["processingStatus"], "pending");
    assert_eq!(created["scanStatus"], "pending");
    assert_eq!(created["mimeType"], "application/pdf");
    assert_eq!(created["sizeBytes"], bytes.len());
    assert_eq!(created["tags"], json!(["finance", "q3"]));
    let id = created["id"].as_str().unwrap().to_owned();

    let asset = processed(app, &token, &id).await;
    assert_eq!(asset["processingStatus"], "completed", "{asset}");
    assert_eq!(asset["scanStatus"], "clean", "{asset}");
    assert_eq!(asset["pageCount"], 1, "{asset}");

    // Found by a word of its extracted text, with a highlight.
    let found = app
        .get("/v1/assets?query=treasury%20committee", Some(&token))
        .expect_status(200)
        .await["data"]
        .clone();
    assert_eq!(found["pagination"]["total"], 1, "{found}");
    let hit = &found["assets"][0];
    assert_eq!(hit["id"], json!(id));
    assert!(hit["rank"].as_f64().unwrap() > 0.0, "{hit}");
    assert!(hit["highlight"].as_str().unwrap().contains("<b>"), "{hit}");
    assert_eq!(
        found["facets"]["mimeTypes"][0],
        json!({"value": "application/pdf", "count": 1})
    );
    assert_eq!(
        found["facets"]["categories"][0],
        json!({"value": "reports", "count": 1})
    );
    // Filters narrow it.
    let none = app
        .get(
            "/v1/assets?query=treasury&mimeType=image%2Fpng",
            Some(&token),
        )
        .expect_status(200)
        .await;
    assert_eq!(none["data"]["pagination"]["total"], 0);
    let by_tag = app
        .get("/v1/assets?tags=finance", Some(&token))
        .expect_status(200)
        .await;
    assert_eq!(by_tag["data"]["pagination"]["total"], 1);

    // A signed link serves the bytes with ETag, Range and caching headers.
    let link = boardroom_tests::expect_status(download_url(app, &token, &id, 600).await, 200).await
        ["data"]
        .clone();
    assert_eq!(link["fileName"], "Q3 report.pdf");
    let url = app.url(link["url"].as_str().unwrap());
    let full = app.client.get(&url).send().await.unwrap();
    assert_eq!(full.status(), 200);
    let etag = full.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        full.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("Q3 report.pdf")
    );
    assert!(
        full.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("public, max-age=")
    );
    assert_eq!(full.bytes().await.unwrap().to_vec(), bytes);
    let part = app
        .client
        .get(&url)
        .header("range", "bytes=0-7")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        format!("bytes 0-7/{}", bytes.len())
    );
    assert_eq!(part.bytes().await.unwrap().as_ref(), b"%PDF-1.4");
    let cached = app
        .client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    let outside = app
        .client
        .get(&url)
        .header("range", "bytes=999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), 416);

    // Two downloads from byte 0 (the full one and the range) are counted.
    let asset = app
        .get(&format!("/v1/assets/{id}"), Some(&token))
        .expect_status(200)
        .await["data"]
        .clone();
    assert_eq!(asset["downloadCount"], 2, "{asset}");
    assert!(asset["viewCount"].as_i64().unwrap() >= 2, "{asset}");
}

#[tokio::test]
async fn the_eicar_file_is_quarantined_and_never_served() {
    let clamd = Clamd::start();
    let env = spawn(Some(&clamd), |_| {}).await;
    let app = &env.app;
    let (token, org) = app.owner_with_org("eicar-org").await;
    let created = upload_ok(app, &token, form(&org, "notes.txt", EICAR.to_vec())).await;
    let id = created["id"].as_str().unwrap().to_owned();
    // Before the verdict the file is not served either.
    let asset = processed(app, &token, &id).await;
    assert_eq!(asset["processingStatus"], "quarantined", "{asset}");
    assert_eq!(asset["scanStatus"], "infected");
    assert_eq!(asset["scanResult"], "Test.Eicar.UNOFFICIAL");
    app.post_json(
        &format!("/v1/assets/{id}/download-url"),
        &token,
        &json!({"expiresIn": 60}),
    )
    .expect_error(403, "forbidden")
    .await;
    // Even a link signed before (or forged with the key) is refused.
    let signer =
        DownloadSigner::new(format!("boardroom-download-links:{TEST_JWT_SECRET}").as_bytes());
    let forged = signer.sign(
        id.parse().unwrap(),
        1,
        chrono::Utc::now().timestamp() + 60,
        None,
    );
    app.get(&format!("/v1/files/{forged}"), None)
        .expect_error(403, "forbidden")
        .await;
    // And it is never extracted for search.
    let found = app
        .get("/v1/assets?query=EICAR", Some(&token))
        .expect_status(200)
        .await;
    assert_eq!(found["data"]["pagination"]["total"], 0);
}

#[tokio::test]
async fn images_get_thumbnails_and_documents_get_text() {
    let env = spawn(None, |_| {}).await;
    let app = &env.app;
    let (token, org) = app.owner_with_org("thumb-org").await;
    let image = upload_ok(app, &token, form(&org, "logo.png", png(640, 320))).await;
    assert_eq!(image["scanStatus"], "skipped");
    let id = image["id"].as_str().unwrap().to_owned();
    let asset = processed(app, &token, &id).await;
    assert_eq!(asset["processingStatus"], "completed", "{asset}");
    assert_eq!(asset["hasThumbnail"], true);
    let thumb = app
        .get(&format!("/v1/assets/{id}/thumbnail"), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(thumb.status(), 200);
    assert_eq!(thumb.headers()["content-type"], "image/png");
    let decoded = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (256, 128));

    let doc = upload_ok(
        app,
        &token,
        form(
            &org,
            "minutes.docx",
            docx(&["Minutes of the remuneration meeting", "Second paragraph"]),
        ),
    )
    .await;
    assert_eq!(
        doc["mimeType"],
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    );
    let csv = upload_ok(
        app,
        &token,
        form(&org, "votes.csv", b"member,vote\nada,abstained\n".to_vec()),
    )
    .await;
    assert_eq!(csv["mimeType"], "text/csv");
    for created in [&doc, &csv] {
        let asset = processed(app, &token, created["id"].as_str().unwrap()).await;
        assert_eq!(asset["processingStatus"], "completed", "{asset}");
    }
    for (word, expected) in [("remuneration", &doc), ("abstained", &csv)] {
        let found = app
            .get(&format!("/v1/assets?query={word}"), Some(&token))
            .expect_status(200)
            .await;
        assert_eq!(
            found["data"]["assets"][0]["id"], expected["id"],
            "{word}: {found}"
        );
    }
    // A text file has no thumbnail.
    app.get(
        &format!("/v1/assets/{}/thumbnail", csv["id"].as_str().unwrap()),
        Some(&token),
    )
    .expect_error(404, "not_found")
    .await;
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx() {
    let env = spawn(None, |s| s.assets.max_file_size = 64 << 10).await;
    let app = &env.app;
    let (token, org) = app.owner_with_org("bad-org").await;

    // Over the size limit.
    let error = boardroom_tests::expect_error(
        upload(app, &token, form(&org, "big.txt", vec![b'a'; 100 << 10])).await,
        413,
        "payload_too_large",
    )
    .await;
    assert!(error["message"].is_string());
    // An executable renamed to .pdf, and bytes of no known type.
    let mut elf =
        b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00".to_vec();
    elf.resize(4096, 0);
    boardroom_tests::expect_error(
        upload(app, &token, form(&org, "report.pdf", elf)).await,
        415,
        "unsupported_media_type",
    )
    .await;
    boardroom_tests::expect_error(
        upload(
            app,
            &token,
            form(&org, "blob.bin", vec![0u8, 1, 2, 3, 255, 254]),
        )
        .await,
        415,
        "unsupported_media_type",
    )
    .await;
    // Path traversal in the file name.
    for name in ["../../etc/passwd", "..\\boot.ini", "a/b.txt"] {
        let error = boardroom_tests::expect_error(
            upload(app, &token, form(&org, name, b"hello".to_vec())).await,
            400,
            "invalid_input",
        )
        .await;
        assert_eq!(error["field"], "file", "{name}");
    }
    // Not multipart; a truncated multipart body; no file; a bad organization id.
    app.post_json("/v1/assets", &token, &json!({}))
        .expect_error(415, "unsupported_media_type")
        .await;
    let boundary = "XyZbOuNdArY";
    let truncated = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"organizationId\"\r\n\r\n{org}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello wor"
    );
    app.client
        .post(app.url("/v1/assets"))
        .bearer_auth(&token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(truncated)
        .expect_error(400, "invalid_input")
        .await;
    boardroom_tests::expect_error(
        upload(app, &token, Form::new().text("organizationId", org.clone())).await,
        400,
        "invalid_input",
    )
    .await;
    boardroom_tests::expect_error(
        upload(app, &token, form("not-a-uuid", "a.txt", b"x".to_vec())).await,
        400,
        "invalid_input",
    )
    .await;
    boardroom_tests::expect_error(
        upload(
            app,
            &token,
            form(&org, "a.txt", b"x".to_vec()).text("confidentialityLevel", "secret"),
        )
        .await,
        400,
        "invalid_input",
    )
    .await;
    // Nothing refused was kept.
    let list = app.get("/v1/assets", Some(&token)).expect_status(200).await;
    assert_eq!(list["data"]["pagination"]["total"], 0);

    // Another tenant's asset is a 404; a restricted one is invisible to members.
    let secret = upload_ok(
        app,
        &token,
        form(&org, "secret.txt", b"merger plans".to_vec())
            .text("confidentialityLevel", "restricted"),
    )
    .await;
    let open = upload_ok(app, &token, form(&org, "open.txt", b"agenda".to_vec())).await;
    let secret_id = secret["id"].as_str().unwrap();
    let (stranger, _) = app.owner_with_org("other-org").await;
    app.get(&format!("/v1/assets/{secret_id}"), Some(&stranger))
        .expect_error(404, "not_found")
        .await;
    app.get(
        &format!("/v1/assets/{}", open["id"].as_str().unwrap()),
        Some(&stranger),
    )
    .expect_error(404, "not_found")
    .await;
    boardroom_tests::expect_error(
        download_url(app, &stranger, open["id"].as_str().unwrap(), 60).await,
        404,
        "not_found",
    )
    .await;
    let (_, member) = app.member(&token, &org, "member").await;
    app.get(&format!("/v1/assets/{secret_id}"), Some(&member))
        .expect_error(404, "not_found")
        .await;
    app.get(
        &format!("/v1/assets/{}", open["id"].as_str().unwrap()),
        Some(&member),
    )
    .expect_status(200)
    .await;
    let seen = app
        .get("/v1/assets", Some(&member))
        .expect_status(200)
        .await;
    assert_eq!(seen["data"]["pagination"]["total"], 1, "{seen}");
    let seen = app.get("/v1/assets", Some(&token)).expect_status(200).await;
    assert_eq!(seen["data"]["pagination"]["total"], 2, "{seen}");
    // Viewers do not upload.
    let (_, viewer) = app.member(&token, &org, "viewer").await;
    boardroom_tests::expect_error(
        upload(app, &viewer, form(&org, "v.txt", b"v".to_vec())).await,
        403,
        "forbidden",
    )
    .await;

    // Tampered and expired links are 403.
    let link = boardroom_tests::expect_status(
        download_url(app, &token, open["id"].as_str().unwrap(), 60).await,
        200,
    )
    .await["data"]
        .clone();
    let url = link["url"].as_str().unwrap().to_owned();
    app.get(&url, None).expect_status(200).await;
    let mut tampered = url.clone().into_bytes();
    let last = tampered.len() - 5;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    app.get(std::str::from_utf8(&tampered).unwrap(), None)
        .expect_error(403, "forbidden")
        .await;
    app.get("/v1/files/not-a-token", None)
        .expect_error(403, "forbidden")
        .await;
    let signer =
        DownloadSigner::new(format!("boardroom-download-links:{TEST_JWT_SECRET}").as_bytes());
    let expired = signer.sign(
        open["id"].as_str().unwrap().parse().unwrap(),
        1,
        chrono::Utc::now().timestamp() - 1,
        None,
    );
    let error = app
        .get(&format!("/v1/files/{expired}"), None)
        .expect_error(403, "forbidden")
        .await;
    assert!(
        error["message"].as_str().unwrap().contains("expired"),
        "{error}"
    );
    boardroom_tests::expect_error(
        download_url(app, &token, open["id"].as_str().unwrap(), 0).await,
        422,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn duplicates_are_detected_per_organization() {
    let env = spawn(None, |_| {}).await;
    let app = &env.app;
    let (token, org) = app.owner_with_org("dup-org").await;
    let first = upload_ok(app, &token, form(&org, "a.txt", b"same bytes".to_vec())).await;
    let error = boardroom_tests::expect_error(
        upload(app, &token, form(&org, "b.txt", b"same bytes".to_vec())).await,
        409,
        "conflict",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap())
    );
    let again = boardroom_tests::expect_status(
        upload(
            app,
            &token,
            form(&org, "c.txt", b"same bytes".to_vec()).text("skipDuplicates", "true"),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(again["data"]["id"], first["id"]);
    assert_eq!(again["data"]["sha256"], first["sha256"]);
    let (other, other_org) = app.owner_with_org("dup-other").await;
    upload_ok(
        app,
        &other,
        form(&other_org, "a.txt", b"same bytes".to_vec()),
    )
    .await;
}

#[tokio::test]
async fn scans_wait_while_clamd_is_down_and_complete_when_it_returns() {
    let mut clamd = Clamd::start();
    let env = spawn(Some(&clamd), |s| {
        s.scanner.timeout = Duration::from_secs(5);
    })
    .await;
    let app = &env.app;
    let (token, org) = app.owner_with_org("outage-org").await;
    clamd.kill();
    // Uploads are still accepted while clamd is down.
    let mut ids = Vec::new();
    for n in 0..3 {
        let created = upload_ok(
            app,
            &token,
            form(
                &org,
                &format!("doc{n}.txt"),
                format!("board minutes number {n}").into_bytes(),
            ),
        )
        .await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let eicar = upload_ok(app, &token, form(&org, "bad.txt", EICAR.to_vec())).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &ids {
        let asset = app
            .get(&format!("/v1/assets/{id}"), Some(&token))
            .expect_status(200)
            .await["data"]
            .clone();
        assert_eq!(asset["scanStatus"], "pending", "{asset}");
        assert_eq!(asset["processingStatus"], "pending", "{asset}");
        // Not downloadable before its scan.
        boardroom_tests::expect_error(download_url(app, &token, id, 60).await, 409, "conflict")
            .await;
    }
    // The breaker noticed.
    let stats = app
        .get("/admin/stats", Some(&app.service_token()))
        .expect_status(200)
        .await;
    let clamd_tile = stats["data"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "clamd")
        .cloned()
        .unwrap();
    assert_eq!(clamd_tile["kind"], "dependency", "{clamd_tile}");
    assert_ne!(clamd_tile["breaker"]["state"], "closed", "{clamd_tile}");
    let ready = app
        .get("/health/ready", None)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        ready["data"]["checks"]["assets"]["scanner"], "degraded",
        "{ready}"
    );

    clamd.restart();
    for id in &ids {
        let asset = processed(app, &token, id).await;
        assert_eq!(asset["scanStatus"], "clean", "{asset}");
        assert_eq!(asset["processingStatus"], "completed", "{asset}");
    }
    let asset = processed(app, &token, eicar["id"].as_str().unwrap()).await;
    assert_eq!(asset["processingStatus"], "quarantined", "{asset}");
    let found = app
        .get("/v1/assets?query=minutes", Some(&token))
        .expect_status(200)
        .await;
    assert_eq!(found["data"]["pagination"]["total"], 3, "{found}");
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// BENCHMARKS.md "Assets: upload memory and throughput": a 200 MB upload
/// through the real app (same process as the client, so the peak RSS
/// growth bounds the server's), against `dd` writing 200 MB to the same
/// folder in the same run. `cargo test --release -p boardroom-tests --test
/// assets -- --ignored --nocapture bench_`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly"]
async fn bench_upload_200mb_memory_and_throughput() {
    const MB: usize = 1 << 20;
    const TOTAL: usize = 200 * MB;
    let env = spawn(None, |s| {
        s.assets.max_file_size = 256 * MB;
        s.server.request_timeout = Duration::from_secs(300);
    })
    .await;
    let app = &env.app;
    let (token, org) = app.owner_with_org("bench-org").await;
    // Warm up allocator, pools and the code paths.
    upload_ok(app, &token, form(&org, "warm.txt", vec![b'w'; 4 * MB])).await;
    let line = b"board minutes, resolution carried unanimously, action items follow\n";
    let chunk: bytes::Bytes = line
        .iter()
        .copied()
        .cycle()
        .take(256 << 10)
        .collect::<Vec<u8>>()
        .into();
    let make_body = || {
        let chunk = chunk.clone();
        reqwest::Body::wrap_stream(futures_util::stream::iter(
            (0..TOTAL / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        ))
    };
    let mut results = Vec::new();
    for run in 0..3 {
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let before = rss_kib("VmRSS:");
        let started = Instant::now();
        let part =
            Part::stream_with_length(make_body(), TOTAL as u64).file_name(format!("big{run}.txt"));
        let created = upload_ok(
            app,
            &token,
            Form::new()
                .text("organizationId", org.clone())
                .part("file", part),
        )
        .await;
        let seconds = started.elapsed().as_secs_f64();
        let peak = rss_kib("VmHWM:");
        assert_eq!(created["sizeBytes"], TOTAL);
        let dd_target = env._storage.0.join(format!("dd{run}.bin"));
        let dd_started = Instant::now();
        let status = std::process::Command::new("dd")
            .args([
                "if=/dev/zero",
                &format!("of={}", dd_target.display()),
                "bs=1M",
                "count=200",
                "status=none",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        let dd_seconds = dd_started.elapsed().as_secs_f64();
        std::fs::remove_file(&dd_target).unwrap();
        let growth_mib = (peak.saturating_sub(before)) as f64 / 1024.0;
        let upload_mbs = 200.0 / seconds;
        let dd_mbs = 200.0 / dd_seconds;
        println!(
            "run {run}: peak RSS growth {growth_mib:.1} MiB; upload {upload_mbs:.0} MB/s; dd {dd_mbs:.0} MB/s; ratio {:.2}",
            upload_mbs / dd_mbs
        );
        results.push((growth_mib, upload_mbs / dd_mbs));
    }
    results.sort_by(|a, b| a.1.total_cmp(&b.1));
    let median = results[1];
    println!(
        "median: RSS growth {:.1} MiB, upload/dd {:.2}",
        median.0, median.1
    );
    assert!(
        results.iter().all(|r| r.0 < 32.0),
        "RSS grew by 32 MiB or more: {results:?}"
    );
}

/// A worker that died mid-step leaves its task `running` under a lease; once
/// the lease passes, another worker takes it and the asset completes.
#[tokio::test]
async fn a_task_left_by_a_crashed_worker_runs_again_after_its_lease() {
    let mut clamd = Clamd::start();
    let env = spawn(Some(&clamd), |_| {}).await;
    let app = &env.app;
    let (token, org) = app.owner_with_org("crash-org").await;
    // With clamd down the scan cycles between waiting and retrying; catch it
    // waiting and make it look claimed by a worker that then died, with a
    // lease of 3 s.
    clamd.kill();
    let created = upload_ok(
        app,
        &token,
        form(&org, "late.txt", b"resumed after a crash".to_vec()),
    )
    .await;
    let id: uuid::Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let started = Instant::now();
    loop {
        let claimed = sqlx::query(
            "UPDATE asset_tasks SET state = 'running', locked_by = 'crashed-worker',
                 locked_until = now() + interval '3 seconds'
             WHERE asset_id = $1 AND step = 'scan' AND state = 'available'",
        )
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap()
        .rows_affected();
        if claimed == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the scan task never waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clamd.restart();
    // clamd is back, but the dead worker's lease still holds the task.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let asset = app
        .get(&format!("/v1/assets/{id}"), Some(&token))
        .expect_status(200)
        .await["data"]
        .clone();
    assert_eq!(
        asset["scanStatus"], "pending",
        "the lease still holds: {asset}"
    );
    // Once it passes, a live worker takes the task and finishes it.
    let asset = processed(app, &token, &id.to_string()).await;
    assert_eq!(asset["scanStatus"], "clean", "{asset}");
    assert_eq!(asset["processingStatus"], "completed", "{asset}");
    let (state, holder): (String, Option<String>) = sqlx::query_as(
        "SELECT state, locked_by FROM asset_tasks WHERE asset_id = $1 AND step = 'scan'",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((state.as_str(), holder), ("done", None));
}

#[tokio::test]
async fn a_bulk_upload_registers_its_files_through_a_job() {
    let env = spawn(None, |_| {}).await;
    let app = &env.app;
    let (token, org) = app.owner_with_org("bulk-org").await;
    let existing = upload_ok(app, &token, form(&org, "old.txt", b"already here".to_vec())).await;
    let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
    elf.resize(2048, 0);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("one.txt", b"first bulk document about pensions".to_vec()),
        ("two.csv", b"a,b\n1,2\n".to_vec()),
        ("evil.pdf", elf),
        ("../escape.txt", b"no".to_vec()),
        ("logo.png", png(64, 64)),
        ("again.txt", b"already here".to_vec()),
    ];
    let mut bulk = Form::new()
        .text("organizationId", org.clone())
        .text("batchSize", "2")
        .text("skipDuplicates", "true")
        .text("generateThumbnails", "false")
        .text("category", "bulk");
    for (name, bytes) in files {
        bulk = bulk.part("file", Part::bytes(bytes).file_name(name.to_owned()));
    }
    let response = app
        .client
        .post(app.url("/v1/assets/bulk"))
        .bearer_auth(&token)
        .multipart(bulk)
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted = boardroom_tests::expect_status(response, 202).await;
    let job_id = accepted["data"]["jobId"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/jobs/{job_id}"));
    let started = Instant::now();
    let job = loop {
        let job = app.get(&location, Some(&token)).expect_status(200).await["data"].clone();
        if job["status"] == "completed"
            || job["status"] == "failed"
            || started.elapsed() > Duration::from_secs(30)
        {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["total"], 6, "{job}");
    assert_eq!(job["succeeded"], 4, "{job}");
    assert_eq!(job["failed"], 2, "{job}");
    let errors = job["errors"].to_string();
    assert!(
        errors.contains("evil.pdf") && errors.contains("escape.txt"),
        "{errors}"
    );
    // 3 new assets (the duplicate was skipped), all in the category.
    let list = app
        .get("/v1/assets?category=bulk", Some(&token))
        .expect_status(200)
        .await["data"]
        .clone();
    assert_eq!(list["pagination"]["total"], 3, "{list}");
    let all = app.get("/v1/assets", Some(&token)).expect_status(200).await["data"].clone();
    assert_eq!(all["pagination"]["total"], 4, "{all}");
    let _ = existing;
    // Processing ran for them; the logo got no thumbnail (generateThumbnails=false).
    for asset in list["assets"].as_array().unwrap() {
        let done = processed(app, &token, asset["id"].as_str().unwrap()).await;
        assert_eq!(done["processingStatus"], "completed", "{done}");
        assert_eq!(done["hasThumbnail"], false, "{done}");
    }
    let found = app
        .get("/v1/assets?query=pensions", Some(&token))
        .expect_status(200)
        .await;
    assert_eq!(found["data"]["pagination"]["total"], 1, "{found}");
    // Analytics see them.
    let analytics = app
        .get(
            &format!("/v1/organizations/{org}/assets/analytics?period=week"),
            Some(&token),
        )
        .expect_status(200)
        .await["data"]
        .clone();
    assert_eq!(analytics["totals"]["assets"], 4, "{analytics}");
    assert_eq!(analytics["totals"]["uploads"], 4, "{analytics}");
    assert_eq!(analytics["processing"]["completed"], 4, "{analytics}");
    assert!(
        analytics["types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["mimeType"] == "image/png"),
        "{analytics}"
    );
    let (_, member) = app.member(&token, &org, "member").await;
    app.get(
        &format!("/v1/organizations/{org}/assets/analytics"),
        Some(&member),
    )
    .expect_error(403, "forbidden")
    .await;
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The query parameters of `url`, decoded.
fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `storage.backend = "s3"` against a real S3-compatible server (moto): the
/// upload streams into the bucket as a multipart upload under the
/// id-derived key, processing reads it back from there, the download link
/// is the bucket's presigned URL (a plain client gets the same bytes), and
/// delete removes the objects.
#[tokio::test]
async fn with_the_s3_backend_files_live_in_the_bucket_and_download_presigned() {
    let clamd = Clamd::start();
    let moto = Moto::start();
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let bucket = format!("boardroom-{}", uuid::Uuid::new_v4().simple());
    moto.create_bucket(&plain, &bucket).await;
    let env = spawn(Some(&clamd), |s| moto.configure(s, &bucket)).await;
    let app = &env.app;

    let ready = app.get("/health/ready", None).expect_status(200).await;
    assert_eq!(
        ready["data"]["checks"]["assets"]["storage"], "ok",
        "{ready}"
    );

    // Larger than two 5 MiB parts: a real multipart upload of three parts.
    let (token, org) = app.owner_with_org("s3-org").await;
    let line = "Board minutes: the treasury committee approved the capital plan.\n";
    let bytes = line.repeat((11 << 20) / line.len() + 1).into_bytes();
    let created = upload_ok(app, &token, form(&org, "Minutes 2026.txt", bytes.clone())).await;
    assert_eq!(created["mimeType"], "text/plain", "{created}");
    assert_eq!(created["sha256"], sha256_hex(&bytes), "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let key = format!("assets/{id}/v1");

    // In the bucket under the id-derived key (no client file name in any
    // key), with exactly the uploaded bytes.
    let keys: Vec<String> = moto
        .keys(&plain, &bucket)
        .await
        .into_iter()
        .filter(|k| !k.starts_with("probes/"))
        .collect();
    assert_eq!(keys, vec![key.clone()]);
    let stored = moto
        .object(&plain, &bucket, &key)
        .await
        .expect("the object");
    assert_eq!(sha256_hex(&stored), sha256_hex(&bytes));

    // Processing read it from the bucket: scanned clean, text extracted.
    let asset = processed(app, &token, &id).await;
    assert_eq!(asset["processingStatus"], "completed", "{asset}");
    assert_eq!(asset["scanStatus"], "clean", "{asset}");
    let found = app
        .get("/v1/assets?query=treasury%20capital", Some(&token))
        .expect_status(200)
        .await;
    assert_eq!(found["data"]["pagination"]["total"], 1, "{found}");

    // An image gets its thumbnail stored in (and served from) the bucket.
    let image = upload_ok(app, &token, form(&org, "chart.png", png(400, 200))).await;
    let image_id = image["id"].as_str().unwrap().to_owned();
    let image_asset = processed(app, &token, &image_id).await;
    assert_eq!(
        image_asset["processingStatus"], "completed",
        "{image_asset}"
    );
    assert!(
        moto.keys(&plain, &bucket)
            .await
            .contains(&format!("thumbnails/{image_id}.png"))
    );
    let thumbnail = app
        .get(&format!("/v1/assets/{image_id}/thumbnail"), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(thumbnail.status(), 200);
    let thumbnail = image::load_from_memory(&thumbnail.bytes().await.unwrap()).unwrap();
    assert_eq!(thumbnail.width().max(thumbnail.height()), 256);

    // The link is the bucket's presigned GET of that key, for the asked life.
    let link = boardroom_tests::expect_status(download_url(app, &token, &id, 600).await, 200).await
        ["data"]
        .clone();
    let url = link["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{}/{bucket}/{key}?", moto.endpoint())),
        "{url}"
    );
    let query = query_of(&url);
    assert_eq!(query["X-Amz-Algorithm"], "AWS4-HMAC-SHA256", "{url}");
    assert_eq!(query["X-Amz-Expires"], "600", "{url}");
    assert!(
        query["X-Amz-Credential"].starts_with(&format!("{}/", s3::ACCESS_KEY_ID)),
        "{url}"
    );
    assert_eq!(query["X-Amz-Signature"].len(), 64, "{url}");
    assert!(
        query["response-content-disposition"].contains("Minutes 2026.txt"),
        "{url}"
    );
    assert_eq!(link["fileName"], "Minutes 2026.txt");
    assert_eq!(link["fileSize"], bytes.len());

    // A plain HTTP client (no credentials) downloads the same bytes from S3.
    let fetched = plain.get(&url).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    let fetched = fetched.bytes().await.unwrap();
    assert_eq!(fetched.len(), bytes.len());
    assert_eq!(sha256_hex(&fetched), sha256_hex(&bytes));

    // The grant was recorded as the download.
    let asset = app
        .get(&format!("/v1/assets/{id}"), Some(&token))
        .expect_status(200)
        .await["data"]
        .clone();
    assert_eq!(asset["downloadCount"], 1, "{asset}");

    // Delete removes the objects; the old link no longer serves the file.
    let deleted = app
        .delete(&format!("/v1/assets/{id}"), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(moto.object(&plain, &bucket, &key).await, None);
    assert!(!moto.keys(&plain, &bucket).await.contains(&key));
    let gone = plain.get(&url).send().await.unwrap();
    assert!(gone.status().is_client_error(), "{}", gone.status());
}

/// The S3 store failing: readiness says `down` (`503`) within its timeout,
/// and an upload is a `503` with `Retry-After`, not a hang or a `500`.
#[tokio::test]
async fn with_the_s3_backend_an_unreachable_bucket_is_down_and_uploads_get_503() {
    let mut moto = Moto::start();
    let plain = reqwest::Client::new();
    let bucket = format!("boardroom-{}", uuid::Uuid::new_v4().simple());
    moto.create_bucket(&plain, &bucket).await;
    let env = spawn(None, |s| moto.configure(s, &bucket)).await;
    let app = &env.app;
    let (token, org) = app.owner_with_org("s3-down-org").await;
    let ready = app.get("/health/ready", None).expect_status(200).await;
    assert_eq!(
        ready["data"]["checks"]["assets"]["storage"], "ok",
        "{ready}"
    );

    moto.kill();
    let started = Instant::now();
    let ready = app.get("/health/ready", None).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready = ready.json::<Value>().await.unwrap();
    assert_eq!(
        ready["data"]["checks"]["assets"]["storage"], "down",
        "{ready}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let response = upload(
        app,
        &token,
        form(&org, "notes.txt", b"quarterly notes".to_vec()),
    )
    .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body = response.json::<Value>().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// A presigned URL is refused by S3 once tampered with or expired. Checked
/// against an S3 server that verifies SigV4 (`s3s` over `s3s-fs`,
/// `tests/support/s3s.rs`): moto accepts any signature.
#[tokio::test]
async fn with_the_s3_backend_a_tampered_or_expired_presigned_url_is_refused() {
    let s3 = VerifyingS3::start("boardroom-links").await;
    let env = spawn(None, |s| s3.configure(s)).await;
    let app = &env.app;
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (token, org) = app.owner_with_org("s3-links-org").await;
    let bytes = b"Audit committee charter, revised.\n".repeat(1000);
    let created = upload_ok(app, &token, form(&org, "charter.txt", bytes.clone())).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let asset = processed(app, &token, &id).await;
    assert_eq!(asset["processingStatus"], "completed", "{asset}");

    let link = boardroom_tests::expect_status(download_url(app, &token, &id, 600).await, 200).await
        ["data"]
        .clone();
    let url = link["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&s3.endpoint()), "{url}");
    let fetched = plain.get(&url).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(
        sha256_hex(&fetched.bytes().await.unwrap()),
        sha256_hex(&bytes)
    );

    let signature = query_of(&url)["X-Amz-Signature"].clone();
    let flipped = format!(
        "{}{}",
        &signature[..63],
        if signature.ends_with('0') { '1' } else { '0' }
    );
    let tampered = [
        url.replace(&signature, &flipped),
        url.replace("X-Amz-Expires=600", "X-Amz-Expires=6000"),
        url.replace(&format!("assets/{id}/v1"), &format!("assets/{id}/v2")),
    ];
    for bad in tampered {
        assert_ne!(bad, url);
        let refused = plain.get(&bad).send().await.unwrap();
        assert_eq!(refused.status(), 403, "{bad}");
        let body = refused.text().await.unwrap();
        assert!(body.contains("SignatureDoesNotMatch"), "{body}");
    }

    let short = boardroom_tests::expect_status(download_url(app, &token, &id, 1).await, 200).await
        ["data"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = plain.get(&short).send().await.unwrap();
    assert_eq!(expired.status(), 403);
    let body = expired.text().await.unwrap();
    assert!(body.contains("expired"), "{body}");
}

/// `GET /v1/assets?…` as `token`: (total, titles of the page, the page).
async fn search(app: &TestApp, token: &str, query: &str) -> (i64, Vec<String>, Value) {
    let data = app
        .get(&format!("/v1/assets?{query}"), Some(token))
        .expect_status(200)
        .await["data"]
        .clone();
    let titles = data["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["title"].as_str().unwrap().to_owned())
        .collect();
    (data["pagination"]["total"].as_i64().unwrap(), titles, data)
}

#[tokio::test]
async fn cached_searches_are_never_stale() {
    let env = spawn(None, |s| {
        // Long enough that only invalidation can explain a fresh result.
        s.assets.search_cache_ttl = Duration::from_secs(600);
    })
    .await;
    let app = &env.app;
    let peer = app.spawn_peer().await;
    let (owner, org) = app.owner_with_org("cache-org").await;
    let (_, admin) = app.member(&owner, &org, "admin").await;
    let (_, member) = app.member(&owner, &org, "member").await;
    let q = "query=budget&sortBy=title&sortOrder=asc";

    // Cached empty results, for every role, on both instances.
    for token in [&owner, &admin, &member] {
        assert_eq!(search(app, token, q).await.0, 0);
        assert_eq!(search(&peer, token, q).await.0, 0);
    }

    // An upload is found at once; `restricted` only by admins and owners,
    // even though an admin's identical query is cached first.
    let secret = upload_ok(
        app,
        &owner,
        form(&org, "secret.txt", b"budget cuts, in confidence".to_vec())
            .text("title", "Budget secret")
            .text("confidentialityLevel", "restricted"),
    )
    .await;
    let plan = upload_ok(
        app,
        &owner,
        form(&org, "plan.txt", b"the budget plan for next year".to_vec())
            .text("title", "Budget plan"),
    )
    .await;
    let plan_id = plan["id"].as_str().unwrap().to_owned();
    // Processing (text extraction) finishes first, so that no processing
    // result lands in the middle of what follows.
    for asset in [&secret, &plan] {
        let done = processed(app, &owner, asset["id"].as_str().unwrap()).await;
        assert_eq!(done["processingStatus"], "completed", "{done}");
    }
    for instance in [app, &peer] {
        for _ in 0..2 {
            let (total, titles, _) = search(instance, &admin, q).await;
            assert_eq!(
                (total, titles),
                (2, vec!["Budget plan".into(), "Budget secret".into()])
            );
            let (total, titles, data) = search(instance, &member, q).await;
            assert_eq!((total, titles), (1, vec!["Budget plan".into()]), "{data}");
            assert!(!data.to_string().contains("restricted"), "{data}");
            assert_eq!(data["facets"]["mimeTypes"][0]["count"], 1, "{data}");
        }
    }
    // The same search for the member without the organization filter, and
    // with it: both see one.
    let scoped = format!("{q}&organizationId={org}");
    assert_eq!(search(app, &member, &scoped).await.0, 1);
    assert_eq!(search(app, &admin, &scoped).await.0, 2);

    // The cache is really serving: a counter changed behind its back (views
    // do not invalidate) is not seen until a real change to the organization.
    sqlx::query("UPDATE assets SET view_count = 1000 WHERE id = $1::uuid")
        .bind(&plan_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, _, data) = search(app, &member, q).await;
    assert_ne!(data["assets"][0]["viewCount"], 1000, "{data}");

    // A change of title: the old words no longer find it, the new ones do.
    app.patch_json(
        &format!("/v1/assets/{plan_id}"),
        &owner,
        &json!({"title": "Treasury plan", "description": "no longer about money"}),
    )
    .expect_status(200)
    .await;
    for instance in [app, &peer] {
        let (total, titles, data) = search(instance, &member, q).await;
        // "budget" is still in its text: found, under its new title.
        assert_eq!((total, titles), (1, vec!["Treasury plan".into()]), "{data}");
        assert_eq!(data["assets"][0]["viewCount"], 1000, "{data}");
        let (total, _, _) = search(instance, &member, "query=treasury").await;
        assert_eq!(total, 1);
    }

    // Making the secret internal shows it to the member at once; making it
    // restricted again hides it at once.
    let secret_id = secret["id"].as_str().unwrap();
    for (level, member_total) in [("internal", 2), ("restricted", 1)] {
        app.patch_json(
            &format!("/v1/assets/{secret_id}"),
            &owner,
            &json!({"confidentialityLevel": level}),
        )
        .expect_status(200)
        .await;
        for instance in [app, &peer] {
            assert_eq!(
                search(instance, &member, q).await.0,
                member_total,
                "{level}"
            );
            assert_eq!(search(instance, &admin, q).await.0, 2, "{level}");
        }
    }

    // A delete is gone at once, for everyone, on both instances.
    app.delete(&format!("/v1/assets/{plan_id}"), &owner)
        .expect_status(204)
        .await;
    for instance in [app, &peer] {
        assert_eq!(search(instance, &member, q).await.0, 0);
        let (total, titles, _) = search(instance, &admin, q).await;
        assert_eq!((total, titles), (1, vec!["Budget secret".into()]));
        assert_eq!(search(instance, &member, "query=treasury").await.0, 0);
    }

    // Another organization's assets never appear, however the cache is keyed.
    let (other, other_org) = app.owner_with_org("cache-other").await;
    upload_ok(
        app,
        &other,
        form(&other_org, "o.txt", b"another budget".to_vec()).text("title", "Budget other"),
    )
    .await;
    assert_eq!(
        search(app, &other, q).await.1,
        vec!["Budget other".to_owned()]
    );
    assert_eq!(
        search(app, &admin, q).await.1,
        vec!["Budget secret".to_owned()]
    );
    peer.stop().await.unwrap();
}
