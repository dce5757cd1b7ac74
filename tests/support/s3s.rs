//! An S3 server that verifies SigV4, in the test process: `s3s` (the S3
//! protocol, with `SimpleAuth` checking every request's and every presigned
//! URL's signature and expiry) over `s3s-fs` (objects as files in a
//! temporary folder), on a free port on 127.0.0.1. moto (`super::s3`)
//! accepts any signature, so the refusal of a tampered or expired presigned
//! URL is checked against this one. Stopped and its folder removed on drop.

use std::{net::SocketAddr, path::PathBuf};

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
};
use s3s::{auth::SimpleAuth, service::S3ServiceBuilder};

use super::s3::{ACCESS_KEY_ID, SECRET_ACCESS_KEY};

/// A running verifying S3 server with one bucket.
pub struct VerifyingS3 {
    addr: SocketAddr,
    dir: PathBuf,
    bucket: String,
    server: tokio::task::JoinHandle<()>,
}

impl VerifyingS3 {
    /// Starts the server with the bucket `bucket` (a folder under its root).
    pub async fn start(bucket: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("boardroom-s3s-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join(bucket)).unwrap();
        let store = s3s_fs::FileSystem::new(&dir).unwrap();
        let mut builder = S3ServiceBuilder::new(store);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY_ID, SECRET_ACCESS_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            dir,
            bucket: bucket.to_owned(),
            server,
        }
    }

    /// `http://127.0.0.1:<port>`, for `storage.s3.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Settings for the `s3` backend on this server's bucket.
    pub fn configure(&self, settings: &mut boardroom::config::Settings) {
        super::s3::s3_settings(settings, &self.bucket, self.endpoint());
    }
}

impl Drop for VerifyingS3 {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
