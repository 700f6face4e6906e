//! Downloads: access check, preconditions, ranges, response headers.

use std::sync::Arc;

use super::reply::{Payload, Reply};
use super::{Ctx, authenticate, conn::Head, internal, no_body};
use crate::capability::check_name;
use crate::conditional::{Outcome, Preconditions, Validators, evaluate, unix_now};
use crate::id::ObjectId;
use crate::range::{self, ByteRange, Resolved};
use crate::service::Entry;

/// One year: the longest `max-age` worth sending.
const YEAR: u64 = 365 * 24 * 3600;

fn parse_id(s: &str) -> Result<ObjectId, Reply> {
    ObjectId::parse(s.as_bytes()).map_err(|_| Reply::error(400, "bad object id"))
}

/// Who is asking: a capability (anyone holding the URL) or a device.
struct Access {
    cache_control: String,
    download_name: Option<String>,
}

async fn access(ctx: &Ctx, head: &Head, id: &ObjectId, cap: Option<&str>) -> Result<Access, Reply> {
    if let Some(q) = cap.or(head.query.as_deref()) {
        let now = unix_now();
        let g = ctx
            .media
            .caps
            .verify(id, Some(q.as_bytes()), now)
            .map_err(|e| Reply::error(403, &e.to_string()))?;
        return Ok(Access {
            cache_control: format!("public, max-age={}, immutable", (g.expires - now).min(YEAR)),
            download_name: g.download_name,
        });
    }
    let account = authenticate(ctx, head).await?;
    may_read(ctx, id, account).await?;
    Ok(Access {
        cache_control: format!("private, max-age={YEAR}, immutable"),
        download_name: None,
    })
}

/// Sealed objects are readable by any device that knows the id (the
/// SHA-256 of ciphertext only its recipients have); processed objects by
/// their owner. Others get 404, as if the object did not exist.
async fn may_read(ctx: &Ctx, id: &ObjectId, account: u64) -> Result<(), Reply> {
    if id.is_sealed() || ctx.media.is_owner(*id, account).await.map_err(internal)? {
        Ok(())
    } else {
        Err(Reply::error(404, "no such object"))
    }
}

async fn entry(ctx: &Ctx, id: ObjectId) -> Result<Arc<Entry>, Reply> {
    ctx.media
        .lookup(id)
        .await
        .map_err(internal)?
        .ok_or_else(|| Reply::error(404, "no such object"))
}

pub(super) async fn get(ctx: &Ctx, head: &Head, id: &str) -> Result<Reply, Reply> {
    get_with(ctx, head, id, None).await
}

/// `GET|HEAD /v1/cap/{exp}/{sig}/{id}[/{name}]`: the capability in the
/// path, for clients and caches that drop query strings; `name` is
/// cosmetic (a file name for the URL) and not signed.
pub(super) async fn get_path(
    ctx: &Ctx,
    head: &Head,
    exp: &str,
    sig: &str,
    id: &str,
) -> Result<Reply, Reply> {
    if head.query.is_some() {
        no_body(head)?;
        return Ok(Reply::error(400, "no query on capability paths"));
    }
    let cap = format!("exp={exp}&sig={sig}");
    get_with(ctx, head, id, Some(&cap)).await
}

async fn get_with(ctx: &Ctx, head: &Head, id: &str, cap: Option<&str>) -> Result<Reply, Reply> {
    no_body(head)?;
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(r) => return Ok(r),
    };
    let a = match access(ctx, head, &id, cap).await {
        Ok(a) => a,
        Err(r) => return Ok(r),
    };
    let e = match entry(ctx, id).await {
        Ok(e) => e,
        Err(r) => return Ok(r),
    };
    Ok(respond(ctx, head, e, a))
}

fn respond(ctx: &Ctx, head: &Head, e: Arc<Entry>, a: Access) -> Reply {
    let v = Validators {
        etag: &e.etag,
        last_modified: e.info.created,
    };
    let p = Preconditions {
        if_match: head.header("if-match"),
        if_none_match: head.header("if-none-match"),
        if_modified_since: head.header("if-modified-since"),
        if_unmodified_since: head.header("if-unmodified-since"),
        if_range: head.header("if-range"),
    };
    let validators = |r: Reply| {
        r.header("ETag", &e.etag)
            .header("Last-Modified", &e.last_modified)
            .header("Cache-Control", &a.cache_control)
    };
    let use_range = match evaluate(&p, &v, true) {
        Outcome::PreconditionFailed => {
            return validators(Reply::error(412, "precondition failed"));
        }
        Outcome::NotModified => return validators(Reply::new(304)),
        Outcome::Proceed { use_range } => use_range,
    };
    let size = e.info.size;
    let content_type = if e.info.id.is_sealed() {
        "application/octet-stream".to_owned()
    } else {
        e.info.content_type.clone()
    };
    let mut r = validators(Reply::new(200))
        .header("Accept-Ranges", "bytes")
        .header("X-Content-Type-Options", "nosniff")
        .header("Content-Security-Policy", "default-src 'none'; sandbox");
    if let Some(name) = a.download_name.as_deref().filter(|n| check_name(n).is_ok()) {
        r = r.header(
            "Content-Disposition",
            format_args!("attachment; filename=\"{name}\""),
        );
    }
    let range_header = if head.method == "GET" && use_range {
        single_range_header(head)
    } else {
        None
    };
    let resolved = range_header
        .and_then(range::parse)
        .map(|specs| range::resolve(&specs, size, ctx.media.limits.max_ranges));
    let (ranges, boundary) = match resolved {
        None => {
            let all = if size > 0 {
                vec![ByteRange {
                    start: 0,
                    end: size,
                }]
            } else {
                Vec::new()
            };
            r = r.header("Content-Type", &content_type);
            (all, None)
        }
        Some(Resolved::Unsatisfiable) => {
            let mut x = r.header("Content-Range", format_args!("bytes */{size}"));
            x.status = 416;
            x.payload = Payload::Bytes(Vec::new());
            return x;
        }
        Some(Resolved::Partial(v)) if v.len() == 1 => {
            r.status = 206;
            r = r.header("Content-Type", &content_type).header(
                "Content-Range",
                format_args!("bytes {}-{}/{size}", v[0].start, v[0].end - 1),
            );
            (v, None)
        }
        Some(Resolved::Partial(v)) => {
            r.status = 206;
            let b = format!("palaver-{:016x}", rand::random::<u64>());
            r = r.header(
                "Content-Type",
                format_args!("multipart/byteranges; boundary={b}"),
            );
            (v, Some(b))
        }
    };
    r.payload = Payload::Object {
        entry: e,
        ranges,
        boundary,
        content_type,
    };
    r
}

/// The Range header if there is exactly one (several are invalid and the
/// request is served whole).
fn single_range_header(head: &Head) -> Option<&[u8]> {
    let mut it = head.headers.iter().filter(|(n, _)| n == "range");
    let first = it.next()?;
    it.next().is_none().then_some(first.1.as_slice())
}

/// `POST /v1/media/{id}/link[?dl=NAME]`: a fresh capability URL.
pub(super) async fn link(ctx: &Ctx, head: &Head, id: &str) -> Result<Reply, Reply> {
    no_body(head)?;
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(r) => return Ok(r),
    };
    let account = match authenticate(ctx, head).await {
        Ok(a) => a,
        Err(r) => return Ok(r),
    };
    if let Err(r) = may_read(ctx, &id, account).await {
        return Ok(r);
    }
    if let Err(r) = entry(ctx, id).await {
        return Ok(r);
    }
    let name = match head.query.as_deref() {
        None => None,
        Some(q) => match q.strip_prefix("dl=") {
            Some(n) if check_name(n).is_ok() => Some(n),
            _ => {
                return Ok(Reply::error(
                    400,
                    "query must be dl=NAME with NAME from [A-Za-z0-9._-]",
                ));
            }
        },
    };
    let (q, exp) = ctx
        .media
        .link(&id, name)
        .ok_or_else(|| Reply::error(400, "bad download name"))?;
    let mut j = serde_json::json!({
        "url": format!("{}/v1/media/{id}?{q}", ctx.cfg.public_url),
        "expires": exp,
    });
    if name.is_none()
        && let Some(sig) = q.split('&').find_map(|kv| kv.strip_prefix("sig="))
    {
        j["path_url"] = format!("{}/v1/cap/{exp}/{sig}/{id}", ctx.cfg.public_url).into();
    }
    Ok(Reply::json(200, &j))
}

/// `DELETE /v1/media/{id}`: drops the caller's reference.
pub(super) async fn delete(ctx: &Ctx, head: &Head, id: &str) -> Result<Reply, Reply> {
    no_body(head)?;
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(r) => return Ok(r),
    };
    let account = match authenticate(ctx, head).await {
        Ok(a) => a,
        Err(r) => return Ok(r),
    };
    match ctx.media.delete(account, id).await {
        Ok(true) => Ok(Reply::new(204)),
        Ok(false) => Ok(Reply::error(404, "no such object")),
        Err(e) => Ok(internal(e)),
    }
}
