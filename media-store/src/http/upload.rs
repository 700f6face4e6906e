//! Uploads: one request (`PUT /v1/media/sealed/{sha256}`, `POST /v1/media`)
//! and resumable (tus 1.0: core, creation, termination, checksum).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::reply::Reply;
use super::{Ctx, authenticate, conn::Conn, conn::Head, content_length, internal, no_body};
use crate::id::{ObjectId, UploadId};
use crate::meta::Kind;
use crate::service::{ChunkDigest, NewUpload, UploadError, valid_content_type};

const TUS_VERSION: &str = "1.0.0";

/// The documented status of each upload error.
fn upload_error(e: &UploadError) -> Reply {
    let status = match e {
        UploadError::NotFound => 404,
        UploadError::OffsetMismatch { .. } | UploadError::Complete => 409,
        UploadError::TooLong | UploadError::TooLarge { .. } => 413,
        UploadError::OverQuota { .. } => 507,
        UploadError::ChecksumMismatch => 460,
        UploadError::ChecksumRequired | UploadError::Truncated { .. } => 400,
        UploadError::Busy => 423,
        UploadError::Storage(_) => return internal(e),
    };
    Reply::error(status, &e.to_string())
}

/// `Palaver-Expires: UNIX-SECONDS`, optional.
fn expires(head: &Head) -> Result<Option<u64>, Reply> {
    match head.header_str("palaver-expires") {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Reply::error(400, "Palaver-Expires must be Unix seconds")),
    }
}

fn created(ctx: &Ctx, id: &ObjectId, size: u64) -> Reply {
    let (q, exp) = ctx.media.link(id, None).unwrap_or_default();
    Reply::json(
        201,
        &serde_json::json!({
            "id": id.to_string(),
            "size": size,
            "url": format!("{}/v1/media/{id}?{q}", ctx.cfg.public_url),
            "url_expires": exp,
        }),
    )
    .header("Location", format_args!("/v1/media/{id}"))
}

/// Runs a one-request upload: reserve, receive, check, commit. On any
/// failure the upload is discarded; nothing becomes visible.
async fn one_shot(
    ctx: &Ctx,
    conn: &mut Conn,
    head: &Head,
    account: u64,
    new: NewUpload,
) -> Result<Reply, Reply> {
    let len = new.length;
    if len > ctx.media.limits.max_single_upload {
        return Err(Reply::error(
            413,
            "too large for one request: use a resumable upload (/v1/uploads)",
        ));
    }
    let up = ctx
        .media
        .create_upload(account, new)
        .await
        .map_err(|e| upload_error(&e))?;
    if head.expects_continue() {
        conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| Reply::error(400, "connection lost"))?;
    }
    let mut body = conn.body(len);
    let result = ctx
        .media
        .append(account, up.uid, 0, len, &mut body, None)
        .await;
    let unread = body.remaining > 0;
    match result {
        Ok((_, Some(id))) => Ok(created(ctx, &id, len)),
        Ok((_, None)) => Err(internal("one-shot upload did not complete")),
        Err(e) => {
            let _ = ctx.media.cancel(account, up.uid).await;
            let r = upload_error(&e);
            if unread { Err(r) } else { Ok(r) }
        }
    }
}

/// `PUT /v1/media/sealed/{sha256}`.
pub(super) async fn put_sealed(
    ctx: &Ctx,
    conn: &mut Conn,
    head: &Head,
    sha: &str,
) -> Result<Reply, Reply> {
    let account = authenticate(ctx, head).await?;
    let Ok(ObjectId::Sealed(digest)) = ObjectId::parse(sha.as_bytes()) else {
        return Err(Reply::error(
            400,
            "the path must end in the SHA-256 of the body (64 lowercase hex)",
        ));
    };
    let length =
        content_length(head)?.ok_or_else(|| Reply::error(411, "Content-Length required"))?;
    let new = NewUpload {
        kind: Kind::Sealed,
        length,
        sha256: Some(digest),
        content_type: "application/octet-stream".into(),
        expires: expires(head)?,
    };
    one_shot(ctx, conn, head, account, new).await
}

/// `POST /v1/media`: a processed object, plaintext body, its Content-Type,
/// optionally `Content-Digest: sha-256=:BASE64:` (RFC 9530).
pub(super) async fn post_processed(
    ctx: &Ctx,
    conn: &mut Conn,
    head: &Head,
) -> Result<Reply, Reply> {
    let account = authenticate(ctx, head).await?;
    let length =
        content_length(head)?.ok_or_else(|| Reply::error(411, "Content-Length required"))?;
    let content_type = head
        .header_str("content-type")
        .filter(|c| valid_content_type(c))
        .ok_or_else(|| Reply::error(415, "a valid Content-Type is required"))?
        .to_owned();
    let sha256 = match head.header_str("content-digest") {
        None => None,
        Some(v) => Some(
            content_digest(v)
                .ok_or_else(|| Reply::error(400, "Content-Digest must be sha-256=:BASE64:"))?,
        ),
    };
    let new = NewUpload {
        kind: Kind::Processed,
        length,
        sha256,
        content_type,
        expires: expires(head)?,
    };
    one_shot(ctx, conn, head, account, new).await
}

fn content_digest(v: &str) -> Option<[u8; 32]> {
    let b64 = v.trim().strip_prefix("sha-256=:")?.strip_suffix(':')?;
    STANDARD.decode(b64).ok()?.try_into().ok()
}

/// `GET /v1/media/usage`: bytes used and the quota.
pub(super) async fn usage(ctx: &Ctx, head: &Head) -> Result<Reply, Reply> {
    no_body(head)?;
    let account = match authenticate(ctx, head).await {
        Ok(a) => a,
        Err(r) => return Ok(r),
    };
    let used = ctx.media.usage(account).await.map_err(internal)?;
    Ok(Reply::json(
        200,
        &serde_json::json!({"used": used, "quota": ctx.media.limits.quota}),
    ))
}

fn tus_reply(status: u16) -> Reply {
    Reply::new(status).header("Tus-Resumable", TUS_VERSION)
}

fn tus_error(r: Reply) -> Reply {
    r.header("Tus-Resumable", TUS_VERSION)
}

/// The tus 1.0 endpoints.
pub(super) async fn tus(
    ctx: &Ctx,
    conn: &mut Conn,
    head: &Head,
    uid: Option<&str>,
) -> Result<Reply, Reply> {
    if head.method == "OPTIONS" && uid.is_none() {
        no_body(head)?;
        let max = ctx
            .media
            .limits
            .max_sealed
            .max(ctx.media.limits.max_processed);
        return Ok(tus_reply(204)
            .header("Tus-Version", TUS_VERSION)
            .header("Tus-Extension", "creation,termination,checksum")
            .header("Tus-Max-Size", max)
            .header("Tus-Checksum-Algorithm", "sha1,sha256"));
    }
    let has_body = !matches!(content_length(head), Ok(None | Some(0)));
    if head.header_str("tus-resumable") != Some(TUS_VERSION) {
        let r =
            Reply::error(412, "Tus-Resumable: 1.0.0 required").header("Tus-Version", TUS_VERSION);
        return if has_body { Err(r) } else { Ok(r) };
    }
    let account = authenticate(ctx, head).await.map_err(tus_error)?;
    let uid = match uid.map(|u| UploadId::parse(u.as_bytes())) {
        None => None,
        Some(Ok(u)) => Some(u),
        Some(Err(_)) => {
            no_body(head)?;
            return Ok(tus_error(Reply::error(404, "no such upload")));
        }
    };
    match (head.method.as_str(), uid) {
        ("POST", None) => {
            no_body(head).map_err(tus_error)?;
            create(ctx, head, account).await.map(tus_error)
        }
        ("HEAD", Some(uid)) => {
            no_body(head)?;
            Ok(tus_error(status(ctx, account, uid).await))
        }
        ("PATCH", Some(uid)) => patch(ctx, conn, head, account, uid)
            .await
            .map(tus_error)
            .map_err(tus_error),
        ("DELETE", Some(uid)) => {
            no_body(head)?;
            Ok(tus_error(match ctx.media.cancel(account, uid).await {
                Ok(()) => Reply::new(204),
                Err(e) => upload_error(&e),
            }))
        }
        _ => {
            no_body(head)?;
            Ok(tus_error(Reply::error(405, "method not allowed")))
        }
    }
}

/// Parses `Upload-Metadata: key base64, key base64`.
fn metadata(v: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut it = pair.split(' ');
        let key = it.next()?.to_owned();
        let value = match it.next() {
            Some(b) => STANDARD.decode(b).ok()?,
            None => Vec::new(),
        };
        if it.next().is_some() || key.is_empty() {
            return None;
        }
        out.push((key, value));
    }
    Some(out)
}

fn new_upload_from(head: &Head) -> Result<NewUpload, Reply> {
    let bad = |m: &str| Reply::error(400, m);
    if head.header("upload-defer-length").is_some() {
        return Err(bad("Upload-Defer-Length is not supported"));
    }
    let length = head
        .header_str("upload-length")
        .filter(|s| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("Upload-Length required"))?;
    let meta = metadata(head.header_str("upload-metadata").unwrap_or(""))
        .ok_or_else(|| bad("malformed Upload-Metadata"))?;
    let get = |k: &str| {
        meta.iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
    };
    let kind = match get("kind").as_deref() {
        Some("sealed") => Kind::Sealed,
        Some("processed") => Kind::Processed,
        _ => return Err(bad("Upload-Metadata needs kind sealed or processed")),
    };
    let sha256 = match get("sha256") {
        None => None,
        Some(h) => {
            let mut b = [0u8; 32];
            hex::decode_to_slice(h.trim(), &mut b)
                .map_err(|_| bad("sha256 must be 64 hex digits"))?;
            Some(b)
        }
    };
    let content_type = match kind {
        Kind::Sealed => "application/octet-stream".to_owned(),
        Kind::Processed => get("content-type")
            .or_else(|| get("filetype"))
            .filter(|c| valid_content_type(c))
            .ok_or_else(|| bad("processed uploads need a valid content-type"))?,
    };
    let expires = match get("expires") {
        None => None,
        Some(e) => Some(
            e.trim()
                .parse()
                .map_err(|_| bad("expires must be Unix seconds"))?,
        ),
    };
    Ok(NewUpload {
        kind,
        length,
        sha256,
        content_type,
        expires,
    })
}

async fn create(ctx: &Ctx, head: &Head, account: u64) -> Result<Reply, Reply> {
    let new = match new_upload_from(head) {
        Ok(n) => n,
        Err(r) => return Ok(r),
    };
    match ctx.media.create_upload(account, new).await {
        Ok(up) => Ok(tus_reply(201)
            .header("Location", format_args!("/v1/uploads/{}", up.uid))
            .header("Upload-Offset", 0)),
        Err(e) => Ok(upload_error(&e)),
    }
}

fn done_headers(ctx: &Ctx, r: Reply, id: &ObjectId) -> Reply {
    let (q, _) = ctx.media.link(id, None).unwrap_or_default();
    r.header("Palaver-Media-Id", id).header(
        "Palaver-Media-Url",
        format_args!("{}/v1/media/{id}?{q}", ctx.cfg.public_url),
    )
}

async fn status(ctx: &Ctx, account: u64, uid: UploadId) -> Reply {
    match ctx.media.upload(account, uid).await {
        Ok(up) => {
            let r = tus_reply(200)
                .header("Upload-Offset", up.offset)
                .header("Upload-Length", up.length)
                .header("Cache-Control", "no-store");
            match up.result {
                Some(id) => done_headers(ctx, r, &id),
                None => r,
            }
        }
        Err(e) => upload_error(&e),
    }
}

fn chunk_digest(v: &str) -> Option<ChunkDigest> {
    let (alg, b64) = v.trim().split_once(' ')?;
    let raw = STANDARD.decode(b64.trim()).ok()?;
    match alg {
        "sha1" => raw.try_into().ok().map(ChunkDigest::Sha1),
        "sha256" => raw.try_into().ok().map(ChunkDigest::Sha256),
        _ => None,
    }
}

async fn patch(
    ctx: &Ctx,
    conn: &mut Conn,
    head: &Head,
    account: u64,
    uid: UploadId,
) -> Result<Reply, Reply> {
    if head.header_str("content-type") != Some("application/offset+octet-stream") {
        return Err(Reply::error(
            415,
            "Content-Type: application/offset+octet-stream required",
        ));
    }
    let len = content_length(head)?.ok_or_else(|| Reply::error(411, "Content-Length required"))?;
    let offset: u64 = head
        .header_str("upload-offset")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Reply::error(400, "Upload-Offset required"))?;
    let chunk = match head.header_str("upload-checksum") {
        None => None,
        Some(v) => Some(chunk_digest(v).ok_or_else(|| {
            Reply::error(
                400,
                "Upload-Checksum must be sha1 or sha256 with a base64 digest",
            )
        })?),
    };
    // Cheap checks before accepting the body.
    let up = ctx
        .media
        .upload(account, uid)
        .await
        .map_err(|e| upload_error(&e))?;
    if up.result.is_some() {
        return Err(upload_error(&UploadError::Complete));
    }
    if offset != up.offset {
        return Err(upload_error(&UploadError::OffsetMismatch {
            expected: up.offset,
            got: offset,
        }));
    }
    if head.expects_continue() {
        conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| Reply::error(400, "connection lost"))?;
    }
    let mut body = conn.body(len);
    let result = ctx
        .media
        .append(account, uid, offset, len, &mut body, chunk)
        .await;
    let unread = body.remaining > 0;
    match result {
        Ok((new_offset, done)) => {
            let r = tus_reply(204).header("Upload-Offset", new_offset);
            Ok(match done {
                Some(id) => done_headers(ctx, r, &id),
                None => r,
            })
        }
        Err(e) => {
            let r = upload_error(&e);
            if unread { Err(r) } else { Ok(r) }
        }
    }
}
