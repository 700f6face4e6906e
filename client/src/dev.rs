//! Reading codes from the development verifier on the admin listener.

use crate::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Fetches the last code the development verifier sent to `phone` from the
/// admin listener at `admin_url` (`http://host:port`).
pub async fn dev_code(admin_url: &str, phone: &str) -> Result<String, Error> {
    let hostport = admin_url
        .strip_prefix("http://")
        .ok_or_else(|| Error::Http("admin URL must start with http://".into()))?
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(hostport)
        .await
        .map_err(|e| Error::Http(format!("cannot reach {hostport}: {e}")))?;
    let req =
        format!("GET /dev/codes/{phone} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| Error::Http(e.to_string()))?;
    let mut resp = Vec::new();
    stream
        .read_to_end(&mut resp)
        .await
        .map_err(|e| Error::Http(e.to_string()))?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Http("malformed HTTP response".into()))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(Error::Http(format!(
            "admin listener answered {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.trim().to_owned())
}
