//! The media store on either blob backend: the local folder, or a Garage
//! node started for the test.

use crate::Server;
use crate::garage::Garage;
use std::ops::Deref;

/// Where the media store keeps its blobs in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    S3,
}

/// Multipart uploads above this size in the S3 tests: S3's smallest part.
pub(crate) const TEST_PART_SIZE: u64 = 5 << 20;

/// A `palaver serve` whose media store uses one backend. Dropping it stops
/// the server, then the Garage node.
#[derive(Debug)]
pub struct MediaServer {
    pub server: Server,
    pub garage: Option<Garage>,
}

impl Deref for MediaServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl MediaServer {
    /// Starts a server (and for S3 a fresh Garage node and bucket) with
    /// extra TOML configuration.
    pub fn start(backend: Backend, config: &str) -> MediaServer {
        let garage = (backend == Backend::S3).then(Garage::start);
        let env = garage
            .as_ref()
            .map(|g| g.env(TEST_PART_SIZE))
            .unwrap_or_default();
        MediaServer {
            server: Server::start_with_env(config, env),
            garage,
        }
    }

    /// Every stored blob path (`s/ab/<sha256>`, `p/ab/<id>`), from the
    /// folder or the bucket, sorted.
    pub fn blob_paths(&self) -> Vec<String> {
        let mut out = match &self.garage {
            Some(g) => g.keys(),
            None => {
                let root = self.data_dir.join("media/blobs");
                let mut v = Vec::new();
                for kind in ["s", "p"] {
                    let Ok(fans) = std::fs::read_dir(root.join(kind)) else {
                        continue;
                    };
                    for fan in fans.flatten() {
                        for f in std::fs::read_dir(fan.path())
                            .into_iter()
                            .flatten()
                            .flatten()
                        {
                            v.push(format!(
                                "{kind}/{}/{}",
                                fan.file_name().to_string_lossy(),
                                f.file_name().to_string_lossy()
                            ));
                        }
                    }
                }
                v
            }
        };
        out.sort();
        out
    }

    /// The stored bytes of the blob of object `id`, `None` if there is none.
    pub fn stored(&self, id: &str) -> Option<Vec<u8>> {
        let kind = if id.len() == 64 { "s" } else { "p" };
        let path = format!("{kind}/{}/{id}", &id[..2]);
        match &self.garage {
            Some(g) => g.get(&path),
            None => std::fs::read(self.data_dir.join("media/blobs").join(path)).ok(),
        }
    }
}
