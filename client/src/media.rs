//! Attachments, WhatsApp style: the client encrypts a file before upload
//! and the server stores bytes it cannot read (a *sealed* object).
//!
//! Scheme: a random 32-byte media key is expanded with HKDF-SHA256 (no
//! salt, info `Palaver Media Keys`) to 112 bytes: IV (16), AES-256 key (32),
//! MAC key (32), and 32 unused bytes. The upload is
//! `AES-256-CBC(PKCS#7, plaintext) || HMAC-SHA256(mac_key, iv || ciphertext)[..10]`.
//! The message that refers to the attachment carries the media key, the
//! SHA-256 of the plaintext and the SHA-256 of the upload; the upload's
//! SHA-256 is also its object id on the server, so a forward re-uses it.
//! [`open`] checks the upload hash, the MAC and the plaintext hash.
//!
//! [`upload_sealed`] and [`download`] speak plain HTTP/1.1 to the media
//! listener (docs/media.md); put a TLS-terminating proxy in front of it.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INFO: &[u8] = b"Palaver Media Keys";
const MAC_LEN: usize = 10;

/// Why an attachment could not be opened or transferred.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the download does not match its SHA-256")]
    EncHashMismatch,
    #[error("the MAC does not match")]
    BadMac,
    #[error("the ciphertext is malformed")]
    Malformed,
    #[error("the plaintext does not match its SHA-256")]
    PlainHashMismatch,
    #[error("HTTP {0}: {1}")]
    Status(u16, String),
    #[error("bad media URL: {0}")]
    BadUrl(String),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
}

/// A sealed attachment and what the message must carry to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The bytes to upload.
    pub bytes: Vec<u8>,
    pub media_key: [u8; 32],
    pub file_sha256: [u8; 32],
    /// SHA-256 of `bytes`: the object id.
    pub file_enc_sha256: [u8; 32],
}

impl Sealed {
    /// The object id on the server (64 lowercase hex digits).
    pub fn object_id(&self) -> String {
        hex(&self.file_enc_sha256)
    }
}

struct Keys {
    iv: [u8; 16],
    cipher: [u8; 32],
    mac: [u8; 32],
}

fn expand(media_key: &[u8; 32]) -> Keys {
    let mut okm = [0u8; 112];
    hkdf::Hkdf::<Sha256>::new(None, media_key)
        .expand(INFO, &mut okm)
        .expect("112 bytes is a valid HKDF-SHA256 length");
    let mut k = Keys {
        iv: [0; 16],
        cipher: [0; 32],
        mac: [0; 32],
    };
    k.iv.copy_from_slice(&okm[..16]);
    k.cipher.copy_from_slice(&okm[16..48]);
    k.mac.copy_from_slice(&okm[48..80]);
    k
}

fn mac(k: &Keys, ciphertext: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&k.mac).expect("any key length");
    m.update(&k.iv);
    m.update(ciphertext);
    m.finalize().into_bytes().into()
}

/// Encrypts `plaintext` under a fresh random media key.
pub fn seal(plaintext: &[u8]) -> Sealed {
    seal_with_key(plaintext, rand::random())
}

/// Encrypts `plaintext` under `media_key` (deterministic; for tests).
pub fn seal_with_key(plaintext: &[u8], media_key: [u8; 32]) -> Sealed {
    let k = expand(&media_key);
    let mut bytes = cbc::Encryptor::<aes::Aes256>::new(&k.cipher.into(), &k.iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let tag = mac(&k, &bytes);
    bytes.extend_from_slice(&tag[..MAC_LEN]);
    Sealed {
        file_enc_sha256: Sha256::digest(&bytes).into(),
        file_sha256: Sha256::digest(plaintext).into(),
        bytes,
        media_key,
    }
}

/// Checks and decrypts a downloaded attachment.
pub fn open(
    bytes: &[u8],
    media_key: &[u8; 32],
    file_sha256: &[u8; 32],
    file_enc_sha256: &[u8; 32],
) -> Result<Vec<u8>, MediaError> {
    use subtle::ConstantTimeEq;
    if Sha256::digest(bytes).as_slice() != file_enc_sha256 {
        return Err(MediaError::EncHashMismatch);
    }
    let n = bytes
        .len()
        .checked_sub(MAC_LEN)
        .ok_or(MediaError::Malformed)?;
    let (ciphertext, tag) = bytes.split_at(n);
    let k = expand(media_key);
    if !bool::from(mac(&k, ciphertext)[..MAC_LEN].ct_eq(tag)) {
        return Err(MediaError::BadMac);
    }
    let plain = cbc::Decryptor::<aes::Aes256>::new(&k.cipher.into(), &k.iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map_err(|_| MediaError::Malformed)?;
    if Sha256::digest(&plain).as_slice() != file_sha256 {
        return Err(MediaError::PlainHashMismatch);
    }
    Ok(plain)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A minimal HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `http://host:port/path?query` into (host:port, /path?query).
fn split_url(url: &str) -> Result<(&str, &str), MediaError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| MediaError::BadUrl("only http:// is supported".into()))?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

/// Sends one request (`Connection: close`) and reads the whole response.
pub async fn request(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, MediaError> {
    let (host, target) = split_url(url)?;
    let mut s = tokio::net::TcpStream::connect(host).await?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    parse_response(&raw, method == "HEAD")
}

/// Parses one complete response (the connection was closed after it).
pub fn parse_response(raw: &[u8], head_only: bool) -> Result<Response, MediaError> {
    let bad = || MediaError::Status(0, "malformed response".into());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let text = std::str::from_utf8(&raw[..end]).map_err(|_| bad())?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if !head_only
        && let Some(n) = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(n);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The result of an upload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Uploaded {
    pub id: String,
    pub size: u64,
    /// A capability URL anyone can fetch until `url_expires`.
    pub url: String,
    pub url_expires: u64,
}

/// Uploads a sealed attachment in one request (`PUT /v1/media/sealed/ID`).
pub async fn upload_sealed(
    media_url: &str,
    device: crate::DeviceId,
    credential: &str,
    sealed: &Sealed,
) -> Result<Uploaded, MediaError> {
    let auth = format!("Bearer {}:{credential}", device.0);
    let url = format!("{media_url}/v1/media/sealed/{}", sealed.object_id());
    let r = request(&url, "PUT", &[("Authorization", &auth)], &sealed.bytes).await?;
    if r.status != 201 {
        return Err(MediaError::Status(
            r.status,
            String::from_utf8_lossy(&r.body).trim().to_owned(),
        ));
    }
    serde_json::from_slice(&r.body).map_err(|e| MediaError::Status(201, e.to_string()))
}

/// Downloads a capability URL.
pub async fn download(url: &str) -> Result<Vec<u8>, MediaError> {
    let r = request(url, "GET", &[], &[]).await?;
    if r.status != 200 {
        return Err(MediaError::Status(
            r.status,
            String::from_utf8_lossy(&r.body).trim().to_owned(),
        ));
    }
    Ok(r.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_check() {
        let s = seal(b"a picture of a cat");
        assert_eq!(s.bytes.len(), 32 + MAC_LEN);
        let plain = open(&s.bytes, &s.media_key, &s.file_sha256, &s.file_enc_sha256).unwrap();
        assert_eq!(plain, b"a picture of a cat");
        let mut flipped = s.bytes.clone();
        flipped[0] ^= 1;
        assert!(matches!(
            open(&flipped, &s.media_key, &s.file_sha256, &s.file_enc_sha256),
            Err(MediaError::EncHashMismatch)
        ));
        let enc: [u8; 32] = Sha256::digest(&flipped).into();
        assert!(matches!(
            open(&flipped, &s.media_key, &s.file_sha256, &enc),
            Err(MediaError::BadMac)
        ));
        assert!(matches!(
            open(&s.bytes, &s.media_key, &[0; 32], &s.file_enc_sha256),
            Err(MediaError::PlainHashMismatch)
        ));
        assert!(matches!(
            open(&s.bytes, &[1; 32], &s.file_sha256, &s.file_enc_sha256),
            Err(MediaError::BadMac)
        ));
    }

    #[test]
    fn deterministic_under_a_key_and_empty_input() {
        let a = seal_with_key(b"", [7; 32]);
        let b = seal_with_key(b"", [7; 32]);
        assert_eq!(a, b);
        assert_eq!(a.bytes.len(), 16 + MAC_LEN);
        assert_eq!(
            open(&a.bytes, &a.media_key, &a.file_sha256, &a.file_enc_sha256).unwrap(),
            b""
        );
        assert_eq!(a.object_id().len(), 64);
    }
}
