//! Naming and fingerprinting the files a recorded program maps.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::record::{FileId, Fingerprint, FINGERPRINT_BYTES};

/// Names and fingerprints the files a recorded program opens, once per
/// (path, device, inode, size, mtime): a shared library opened by every
/// process of a pipeline is hashed once. Shared by every stream's
/// [`LineParser`](super::LineParser).
///
/// A relative path is resolved against `cwd`, the directory the recorded
/// program started in (a program that `chdir`s and then opens a relative
/// path may be fingerprinted wrongly or not at all; mappings of files the
/// process inherited already open get no identity).
#[derive(Debug)]
pub struct FileIdentifier {
    cwd: std::path::PathBuf,
    known: Mutex<std::collections::HashMap<FileKey, Arc<FileId>>>,
}

/// What makes a file the same file for [`FileIdentifier`]: path as opened,
/// device, inode, size and mtime (ns).
type FileKey = (Vec<u8>, u64, u64, u64, i64);

impl FileIdentifier {
    /// An identifier resolving relative paths against `cwd`.
    pub fn new(cwd: std::path::PathBuf) -> Self {
        FileIdentifier {
            cwd,
            known: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The identity of the file at `path` now; without a fingerprint if it
    /// cannot be read (removed, no permission).
    pub fn identify(&self, path: &[u8]) -> Arc<FileId> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let name = String::from_utf8_lossy(path).into_owned();
        let full = self.cwd.join(std::ffi::OsStr::from_bytes(path));
        let unknown = || {
            Arc::new(FileId {
                path: name.clone(),
                fingerprint: None,
            })
        };
        let Ok(meta) = std::fs::metadata(&full) else {
            return unknown();
        };
        if !meta.is_file() {
            return unknown();
        }
        let key = (
            path.to_vec(),
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
        );
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = known.get(&key) {
            return Arc::clone(id);
        }
        let id = match fingerprint_file(&full, meta.size()) {
            Some(fingerprint) => Arc::new(FileId {
                path: name,
                fingerprint: Some(fingerprint),
            }),
            None => return unknown(),
        };
        known.insert(key, Arc::clone(&id));
        id
    }
}

/// Size and XXH3-64 of the first [`FINGERPRINT_BYTES`] of the file.
pub(crate) fn fingerprint_file(path: &Path, size: u64) -> Option<Fingerprint> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut r = std::io::BufReader::with_capacity(1 << 16, f.take(FINGERPRINT_BYTES));
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(Fingerprint {
        size,
        hash: h.digest(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identifier_fingerprints_each_file_once() {
        let dir = std::env::temp_dir().join(format!("vmemsim-fid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), b"hello").unwrap();
        let ids = FileIdentifier::new(dir.clone());
        let a = ids.identify(b"f");
        let b = ids.identify(b"f");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(
            a.fingerprint,
            Some(Fingerprint {
                size: 5,
                hash: xxhash_rust::xxh3::xxh3_64(b"hello")
            })
        );
        assert_eq!(ids.identify(b"missing").fingerprint, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
