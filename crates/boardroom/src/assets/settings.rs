//! `[storage]`, `[scanner]` and `[assets]`: where files live, how they are
//! scanned, and the limits of uploads, processing and downloads.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `storage.backend`: which object store holds the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// A local folder (`storage.path`); downloads go through `/v1/files/{token}`.
    Local,
    /// An S3-compatible bucket (`[storage.s3]`); downloads are the store's
    /// presigned GET URLs.
    S3,
}

/// `[storage]`: the object store behind every asset.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// `storage.backend` — `local` or `s3`. Default `local`.
    pub backend: StorageBackend,
    /// `storage.path` — folder of the local object store (created if
    /// missing; used by the `local` backend). Default `./data/assets`.
    pub path: String,
    /// `[storage.s3]` — the bucket of the `s3` backend.
    pub s3: S3Settings,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Local,
            path: "./data/assets".into(),
            s3: S3Settings::default(),
        }
    }
}

/// `[storage.s3]`: an S3-compatible bucket (AWS S3, MinIO, Ceph, moto, …).
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// `storage.s3.bucket` — the bucket (it must exist). Required with `backend = "s3"`.
    pub bucket: String,
    /// `storage.s3.endpoint` — base URL of the S3 API, e.g.
    /// `http://127.0.0.1:9000`; empty: AWS (`https://s3.<region>.amazonaws.com`).
    /// Presigned download URLs point here, so clients must reach it.
    pub endpoint: String,
    /// `storage.s3.region` — the signing region. Default `us-east-1`.
    pub region: String,
    /// `storage.s3.access_key_id` — with `secret_access_key`; both empty:
    /// the AWS credential chain (`AWS_*` variables, web identity, instance
    /// metadata).
    pub access_key_id: String,
    /// `storage.s3.secret_access_key` — the secret of `access_key_id`.
    pub secret_access_key: String,
    /// `storage.s3.allow_http` — allow a plain `http://` endpoint. Default `false`.
    pub allow_http: bool,
    /// `storage.s3.path_style` — `endpoint/bucket/key` URLs instead of
    /// `bucket.endpoint/key` (virtual-hosted). Default `true`.
    pub path_style: bool,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            allow_http: false,
            path_style: true,
        }
    }
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &if self.secret_access_key.is_empty() {
                    ""
                } else {
                    "<hidden>"
                },
            )
            .field("allow_http", &self.allow_http)
            .field("path_style", &self.path_style)
            .finish()
    }
}

/// The longest life of an S3 presigned URL (SigV4: 7 days).
pub const S3_MAX_PRESIGNED_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// `[scanner]`: the clamd virus scanner.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScannerSettings {
    /// `scanner.clamd_url` — `tcp://host:port` or `unix:///path`; empty: no
    /// scanning (assets get `scanStatus: skipped`). Default empty.
    pub clamd_url: String,
    /// `scanner.timeout` — longest one scan may take. Default `60s`.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// `scanner.allow_unscanned_downloads` — whether an asset whose scan is
    /// still pending may be downloaded. Default `false`.
    pub allow_unscanned_downloads: bool,
}

impl Default for ScannerSettings {
    fn default() -> Self {
        Self {
            clamd_url: String::new(),
            timeout: Duration::from_secs(60),
            allow_unscanned_downloads: false,
        }
    }
}

/// `[assets]`: uploads, the processing workers and downloads.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssetSettings {
    /// `assets.max_file_size` — largest uploaded file (`413` beyond). Default `512MiB`.
    #[serde(with = "size_compat")]
    pub max_file_size: usize,
    /// `assets.allowed_types` — MIME types accepted, as sniffed from the bytes
    /// (`415` otherwise).
    pub allowed_types: Vec<String>,
    /// `assets.workers` — processing workers in this process (0–32). Default `2`.
    pub workers: usize,
    /// `assets.poll_interval` — how often idle workers look for tasks. Default `1s`.
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    /// `assets.lease` — how long a claimed task is reserved; a crashed
    /// worker's task is taken again after it. Default `5m`.
    #[serde(with = "humantime_serde_compat")]
    pub lease: Duration,
    /// `assets.retry_base_delay` — first wait after a failed step, doubled each
    /// attempt. Default `1s`.
    #[serde(with = "humantime_serde_compat")]
    pub retry_base_delay: Duration,
    /// `assets.retry_max_delay` — longest wait between attempts. Default `1m`.
    #[serde(with = "humantime_serde_compat")]
    pub retry_max_delay: Duration,
    /// `assets.max_attempts` — tries of a step that fails on the file itself
    /// (a corrupt image); an unreachable scanner is retried without limit.
    /// Default `5`.
    pub max_attempts: u32,
    /// `assets.thumbnail_size` — longest edge of a thumbnail, pixels. Default `256`.
    pub thumbnail_size: u32,
    /// `assets.max_image_dimension` — images wider or taller are not decoded
    /// (decompression bombs). Default `12000`.
    pub max_image_dimension: u32,
    /// `assets.max_process_bytes` — files larger are stored and scanned but
    /// get no text or thumbnail (they would be read into memory). Default `64MiB`.
    #[serde(with = "size_compat")]
    pub max_process_bytes: usize,
    /// `assets.max_text_bytes` — most extracted text kept per asset (and most
    /// bytes a DOCX part may decompress to). Default `4MiB`.
    #[serde(with = "size_compat")]
    pub max_text_bytes: usize,
    /// `assets.download_secret` — HMAC key of download tokens (at least 16
    /// characters); empty: derived from `auth.jwt_secret`. Default empty.
    pub download_secret: String,
    /// `assets.max_download_expiry` — longest `expiresIn` of a download URL. Default `7d`.
    #[serde(with = "humantime_serde_compat")]
    pub max_download_expiry: Duration,
    /// `assets.search_cache_entries` — most search results cached in this
    /// process (0: no cache). Default `1000` (pages of ≈ 20 KB: ≈ 20 MB at most).
    pub search_cache_entries: u64,
    /// `assets.search_cache_ttl` — longest a cached search result is
    /// served (a change to the organization's assets ends it at once; only
    /// view and download counts may lag this long). Default `60s`.
    #[serde(with = "humantime_serde_compat")]
    pub search_cache_ttl: Duration,
}

impl Default for AssetSettings {
    fn default() -> Self {
        Self {
            max_file_size: 512 << 20,
            allowed_types: [
                "application/pdf",
                "text/plain",
                "text/csv",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "application/vnd.openxmlformats-officedocument.presentationml.presentation",
                "image/png",
                "image/jpeg",
                "image/gif",
                "image/webp",
            ]
            .map(str::to_owned)
            .to_vec(),
            workers: 2,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(300),
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(60),
            max_attempts: 5,
            thumbnail_size: 256,
            max_image_dimension: 12_000,
            max_process_bytes: 64 << 20,
            max_text_bytes: 4 << 20,
            download_secret: String::new(),
            max_download_expiry: Duration::from_secs(7 * 24 * 3600),
            search_cache_entries: 1_000,
            search_cache_ttl: Duration::from_secs(60),
        }
    }
}

fn invalid(key: &'static str, value: impl ToString, allowed: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

/// Checks the three sections; the first problem names its key.
pub fn validate(
    storage: &StorageSettings,
    scanner: &ScannerSettings,
    assets: &AssetSettings,
) -> Result<(), ConfigError> {
    match storage.backend {
        StorageBackend::Local => {
            if storage.path.trim().is_empty() {
                return Err(invalid("storage.path", "\"\"", "must name a folder"));
            }
        }
        StorageBackend::S3 => validate_s3(&storage.s3, assets)?,
    }
    if !scanner.clamd_url.is_empty()
        && crate::assets::scan::ClamdAddr::parse(&scanner.clamd_url).is_none()
    {
        return Err(invalid(
            "scanner.clamd_url",
            format!("{:?}", scanner.clamd_url),
            "must be empty, tcp://host:port or unix:///path",
        ));
    }
    if scanner.timeout < Duration::from_millis(10) || scanner.timeout > Duration::from_secs(3600) {
        return Err(invalid(
            "scanner.timeout",
            humantime::format_duration(scanner.timeout),
            "must be between 10ms and 1h",
        ));
    }
    if !(1..=(64usize << 30)).contains(&assets.max_file_size) {
        return Err(invalid(
            "assets.max_file_size",
            assets.max_file_size,
            "must be between 1 byte and 64GiB",
        ));
    }
    if assets.allowed_types.is_empty() {
        return Err(invalid(
            "assets.allowed_types",
            "[]",
            "must list at least one MIME type",
        ));
    }
    if assets.workers > 32 {
        return Err(invalid(
            "assets.workers",
            assets.workers,
            "must be between 0 and 32",
        ));
    }
    for (key, value) in [
        ("assets.poll_interval", assets.poll_interval),
        ("assets.lease", assets.lease),
        ("assets.retry_base_delay", assets.retry_base_delay),
        ("assets.retry_max_delay", assets.retry_max_delay),
    ] {
        if value < Duration::from_millis(10) || value > Duration::from_secs(24 * 3600) {
            return Err(invalid(
                key,
                humantime::format_duration(value),
                "must be between 10ms and 24h",
            ));
        }
    }
    if !(1..=100).contains(&assets.max_attempts) {
        return Err(invalid(
            "assets.max_attempts",
            assets.max_attempts,
            "must be between 1 and 100",
        ));
    }
    if !(16..=2048).contains(&assets.thumbnail_size) {
        return Err(invalid(
            "assets.thumbnail_size",
            assets.thumbnail_size,
            "must be between 16 and 2048",
        ));
    }
    if !(16..=65_535).contains(&assets.max_image_dimension) {
        return Err(invalid(
            "assets.max_image_dimension",
            assets.max_image_dimension,
            "must be between 16 and 65535",
        ));
    }
    if !(1..=(1usize << 30)).contains(&assets.max_process_bytes) {
        return Err(invalid(
            "assets.max_process_bytes",
            assets.max_process_bytes,
            "must be between 1 byte and 1GiB",
        ));
    }
    if !(1..=(64usize << 20)).contains(&assets.max_text_bytes) {
        return Err(invalid(
            "assets.max_text_bytes",
            assets.max_text_bytes,
            "must be between 1 byte and 64MiB",
        ));
    }
    if !assets.download_secret.is_empty() && assets.download_secret.chars().count() < 16 {
        return Err(invalid(
            "assets.download_secret",
            "<hidden>",
            "must be empty or at least 16 characters",
        ));
    }
    if assets.max_download_expiry < Duration::from_secs(1) {
        return Err(invalid(
            "assets.max_download_expiry",
            humantime::format_duration(assets.max_download_expiry),
            "must be at least 1s",
        ));
    }
    if assets.search_cache_entries > 1_000_000 {
        return Err(invalid(
            "assets.search_cache_entries",
            assets.search_cache_entries,
            "must be between 0 and 1000000",
        ));
    }
    if assets.search_cache_ttl < Duration::from_millis(10)
        || assets.search_cache_ttl > Duration::from_secs(24 * 3600)
    {
        return Err(invalid(
            "assets.search_cache_ttl",
            humantime::format_duration(assets.search_cache_ttl),
            "must be between 10ms and 24h",
        ));
    }
    Ok(())
}

fn validate_s3(s3: &S3Settings, assets: &AssetSettings) -> Result<(), ConfigError> {
    if s3.bucket.trim().is_empty() {
        return Err(invalid(
            "storage.s3.bucket",
            "\"\"",
            "must name a bucket when storage.backend = \"s3\"",
        ));
    }
    if !s3.endpoint.is_empty() {
        let scheme = reqwest::Url::parse(&s3.endpoint)
            .ok()
            .filter(|url| url.has_host())
            .map(|url| url.scheme().to_owned());
        match scheme.as_deref() {
            Some("https") => {}
            Some("http") if s3.allow_http => {}
            Some("http") => {
                return Err(invalid(
                    "storage.s3.endpoint",
                    format!("{:?}", s3.endpoint),
                    "must be https:// unless storage.s3.allow_http = true",
                ));
            }
            _ => {
                return Err(invalid(
                    "storage.s3.endpoint",
                    format!("{:?}", s3.endpoint),
                    "must be empty (AWS) or an http(s):// URL",
                ));
            }
        }
    }
    if s3.region.trim().is_empty() {
        return Err(invalid("storage.s3.region", "\"\"", "must name a region"));
    }
    if s3.access_key_id.is_empty() != s3.secret_access_key.is_empty() {
        return Err(invalid(
            "storage.s3.access_key_id",
            if s3.access_key_id.is_empty() {
                "\"\""
            } else {
                "<set>"
            },
            "must be set together with storage.s3.secret_access_key (or both empty)",
        ));
    }
    if assets.max_download_expiry > S3_MAX_PRESIGNED_EXPIRY {
        return Err(invalid(
            "assets.max_download_expiry",
            humantime::format_duration(assets.max_download_expiry),
            "must be at most 7d with storage.backend = \"s3\" (presigned URL limit)",
        ));
    }
    Ok(())
}

/// Human-readable durations, as in the rest of the configuration.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            D::Error::custom(format!(
                "invalid duration {text:?} ({e}); expected a duration like \"10s\" or \"250ms\""
            ))
        })
    }

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }
}

/// Sizes as bytes or text with a unit (`"512MiB"`).
mod size_compat {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        N(u64),
        S(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        match Size::deserialize(d)? {
            Size::N(n) => usize::try_from(n).map_err(D::Error::custom),
            Size::S(text) => crate::config::parse_size(&text).ok_or_else(|| {
                D::Error::custom(format!(
                    "invalid size {text:?}; expected bytes or a size like \"512MiB\""
                ))
            }),
        }
    }

    pub(super) fn serialize<S: Serializer>(value: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*value as u64)
    }
}
