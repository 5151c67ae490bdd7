//! [`Spool`]: an upload's bytes written to a temporary file as they arrive, hashed on the
//! way and counted against the largest file accepted; the file is removed when the spool is
//! dropped, however the request ends.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::error::ApiError;

/// An upload being written.
pub struct Spool {
    file: tokio::io::BufWriter<tokio::fs::File>,
    path: tempfile::TempPath,
    hasher: blake3::Hasher,
    size: u64,
    max: u64,
}

/// A finished upload.
pub struct Spooled {
    /// The file (removed when dropped).
    pub path: tempfile::TempPath,
    /// Its bytes.
    pub size: u64,
    /// Its BLAKE3.
    pub blake3: [u8; 32],
}

impl Spool {
    /// A new spool file in `dir` for at most `max` bytes.
    pub fn create(dir: &Path, max: u64) -> Result<Self, ApiError> {
        let (file, path) = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(dir)
            .map_err(|e| {
                internal(format!(
                    "cannot make a spool file in {}: {e}",
                    dir.display()
                ))
            })?
            .into_parts();
        Ok(Self {
            file: tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file)),
            path,
            hasher: blake3::Hasher::new(),
            size: 0,
            max,
        })
    }

    /// Appends `chunk`; a body past the largest file accepted is refused (413).
    pub async fn write(&mut self, chunk: &Bytes) -> Result<(), ApiError> {
        self.size += chunk.len() as u64;
        if self.size > self.max {
            return Err(too_large(self.max));
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| internal(format!("cannot spool the upload: {e}")))
    }

    /// Flushes the file.
    pub async fn finish(mut self) -> Result<Spooled, ApiError> {
        self.file
            .flush()
            .await
            .map_err(|e| internal(format!("cannot spool the upload: {e}")))?;
        Ok(Spooled {
            path: self.path,
            size: self.size,
            blake3: *self.hasher.finalize().as_bytes(),
        })
    }
}

/// The next piece of a body, waiting at most `idle`: a client that stops sending is cut off.
pub async fn next_chunk<F, E>(next: F, idle: Duration) -> Result<Option<Bytes>, ApiError>
where
    F: Future<Output = Option<Result<Bytes, E>>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(idle, next).await {
        Err(_) => Err(ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the upload sent nothing for {idle:?}"),
        )),
        Ok(None) => Ok(None),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        Ok(Some(Err(e))) => Err(ApiError::bad_request(format!("the upload failed: {e}"))),
    }
}

/// 413 for a body past `max` bytes.
pub fn too_large(max: u64) -> ApiError {
    ApiError::too_large(format!(
        "the body exceeds the largest file this node accepts ({max} bytes, files.max_file_bytes)"
    ))
}

fn internal(message: String) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spool_hashes_what_it_writes_and_refuses_more_than_its_bound() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::create(dir.path(), 10).expect("spool");
        spool
            .write(&Bytes::from_static(b"hello "))
            .await
            .expect("fits");
        spool
            .write(&Bytes::from_static(b"you"))
            .await
            .expect("fits");
        let done = spool.finish().await.expect("finished");
        assert_eq!(done.size, 9);
        assert_eq!(&done.blake3, blake3::hash(b"hello you").as_bytes());
        assert_eq!(std::fs::read(&done.path).expect("read"), b"hello you");
        let path = done.path.to_path_buf();
        drop(done);
        assert!(!path.exists(), "the spool is removed when dropped");

        let mut spool = Spool::create(dir.path(), 4).expect("spool");
        let refused = spool.write(&Bytes::from_static(b"12345")).await;
        assert_eq!(
            refused.map_err(|e| e.status),
            Err(axum::http::StatusCode::PAYLOAD_TOO_LARGE)
        );
    }
}
