//! `palaver serve --tls-self-signed`: a development certificate made once
//! in `<data_dir>/tls/` and reused on later starts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why the development certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make a certificate for {names:?}: {source}")]
    Generate {
        names: Vec<String>,
        source: rcgen::Error,
    },
}

/// Where the development certificate and key live.
pub fn paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (
        dir.join("self-signed-cert.pem"),
        dir.join("self-signed-key.pem"),
    )
}

/// Makes the certificate (ECDSA P-256, for `names`) unless both files
/// exist; returns their paths and whether they were made now.
pub fn ensure(
    data_dir: &Path,
    names: &[String],
) -> Result<(PathBuf, PathBuf, bool), SelfSignedError> {
    let (cert, key) = paths(data_dir);
    if cert.exists() && key.exists() {
        return Ok((cert, key, false));
    }
    let err = |source| SelfSignedError::Generate {
        names: names.to_vec(),
        source,
    };
    let pair = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "palaver development certificate");
    let signed = params.self_signed(&pair).map_err(err)?;
    let dir = cert.parent().unwrap_or(data_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(dir)
        .map_err(|source| SelfSignedError::Write {
            path: dir.to_owned(),
            source,
        })?;
    // The key first: a certificate without its key is never left behind.
    write_new(&key, pair.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert, signed.pem().as_bytes(), 0o644)?;
    Ok((cert, key, true))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SelfSignedError> {
    let err = |source| SelfSignedError::Write {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let (c, k, made) = ensure(dir.path(), &names).unwrap();
        assert!(made);
        let first = std::fs::read(&c).unwrap();
        let (_, _, made) = ensure(dir.path(), &names).unwrap();
        assert!(!made);
        assert_eq!(std::fs::read(&c).unwrap(), first);
        super::super::resolver::CertResolver::load(&c, &k).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&k).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
    }
}
