//! A private S3-compatible server for the asset tests: moto's server
//! (`moto_server`, Python) on a free TCP port on 127.0.0.1, its data in
//! memory. Installed from PyPI (`pip install 'moto[server]'`) when missing
//! — once per test binary, whoever asks first — started per test, waited
//! for with a bounded poll, and killed by pid when dropped.
//!
//! moto checks request shapes (multipart part sizes, keys, ranges) like S3,
//! but it does not verify SigV4 signatures, neither of requests nor of
//! presigned URLs: what a presigned URL refuses once tampered with or
//! expired cannot be observed against it.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The access key the tests configure (moto accepts any).
pub const ACCESS_KEY_ID: &str = "AKIABOARDROOMTEST000";
/// Its secret.
pub const SECRET_ACCESS_KEY: &str = "boardroom-test-secret-access-key";
/// The region the tests sign for.
pub const REGION: &str = "us-east-1";

/// Installs `moto[server]` with pip unless `python3` can already import it.
/// Runs at most once per process; panics with pip's output when it fails.
pub fn ensure_installed() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let importable = || {
            Command::new("python3")
                .args(["-c", "import moto.server, flask, flask_cors"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if importable() {
            return;
        }
        let output = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "moto[server]>=5,<6",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("python3 runs (pip installs moto for the S3 tests)");
        assert!(
            output.status.success() && importable(),
            "pip install 'moto[server]' failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// A running moto server.
pub struct Moto {
    port: u16,
    child: Option<Child>,
}

impl Moto {
    /// Installs moto if needed, starts it on a free port and waits (at most
    /// 60 s) until it answers HTTP.
    pub fn start() -> Self {
        ensure_installed();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto's server starts");
        let mut moto = Self {
            port,
            child: Some(child),
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if moto.answers() {
                return moto;
            }
            if let Some(child) = moto.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("moto's server exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        moto.kill();
        panic!("moto's server did not answer within 60 s on port {port}");
    }

    /// `http://127.0.0.1:<port>`, for `storage.s3.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Settings for the `s3` backend on `bucket` of this server.
    pub fn configure(&self, settings: &mut boardroom::config::Settings, bucket: &str) {
        s3_settings(settings, bucket, self.endpoint());
    }

    /// Creates `bucket` (plain `PUT /<bucket>`).
    pub async fn create_bucket(&self, client: &reqwest::Client, bucket: &str) {
        let response = client
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "create bucket {bucket}: {}",
            response.status()
        );
    }

    /// Every key in `bucket` (`ListObjectsV2`, one page: the tests store few).
    pub async fn keys(&self, client: &reqwest::Client, bucket: &str) -> Vec<String> {
        let response = client
            .get(format!("{}/{bucket}?list-type=2", self.endpoint()))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let xml = response.text().await.unwrap();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_owned()))
            .collect()
    }

    /// The bytes under `key`, read straight from the server (`None`: 404).
    pub async fn object(
        &self,
        client: &reqwest::Client,
        bucket: &str,
        key: &str,
    ) -> Option<Vec<u8>> {
        let response = client
            .get(format!("{}/{bucket}/{key}", self.endpoint()))
            .send()
            .await
            .unwrap();
        if response.status() == 404 {
            return None;
        }
        assert!(response.status().is_success(), "{}", response.status());
        Some(response.bytes().await.unwrap().to_vec())
    }

    fn answers(&self) -> bool {
        let Ok(mut socket) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = socket.set_read_timeout(Some(Duration::from_secs(2)));
        if socket
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut reply = [0u8; 16];
        matches!(socket.read(&mut reply), Ok(n) if reply[..n].starts_with(b"HTTP/1.1 200"))
    }

    /// Kills the server (as a crash would): the store becomes unreachable.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `s3` backend on `bucket` at `endpoint` (plain HTTP, path-style), with
/// the test credentials: what both test servers (moto, s3s) take.
pub fn s3_settings(settings: &mut boardroom::config::Settings, bucket: &str, endpoint: String) {
    use boardroom::assets::settings::StorageBackend;
    settings.storage.backend = StorageBackend::S3;
    settings.storage.s3.bucket = bucket.to_owned();
    settings.storage.s3.endpoint = endpoint;
    settings.storage.s3.region = REGION.to_owned();
    settings.storage.s3.access_key_id = ACCESS_KEY_ID.to_owned();
    settings.storage.s3.secret_access_key = SECRET_ACCESS_KEY.to_owned();
    settings.storage.s3.allow_http = true;
    settings.storage.s3.path_style = true;
}
