//! `GET /v1/media/{id}/job`: the transcoding job of a processed object,
//! for its owner: state, progress, failure reason, and the variants with
//! capability URLs.

use super::conn::Head;
use super::reply::Reply;
use super::{Ctx, authenticate, internal};
use crate::id::ObjectId;

pub(super) async fn get(ctx: &Ctx, head: &Head, id: &str) -> Result<Reply, Reply> {
    let Ok(id) = ObjectId::parse(id.as_bytes()) else {
        return Ok(Reply::error(400, "bad object id"));
    };
    let account = match authenticate(ctx, head).await {
        Ok(a) => a,
        Err(r) => return Ok(r),
    };
    if !ctx.media.is_owner(id, account).await.map_err(internal)? {
        return Ok(Reply::error(404, "no such object"));
    }
    let Some(job) = ctx.media.job_view(id).await.map_err(internal)? else {
        return Ok(Reply::error(404, "no job for this object"));
    };
    let mut v = serde_json::to_value(&job).map_err(internal)?;
    if let Some(list) = v.get_mut("variants").and_then(|l| l.as_array_mut()) {
        for item in list {
            let Some(vid) = item
                .get("id")
                .and_then(|x| x.as_str())
                .and_then(|s| ObjectId::parse(s.as_bytes()).ok())
            else {
                continue;
            };
            if let Some((q, exp)) = ctx.media.link(&vid, None) {
                item["url"] = format!("{}/v1/media/{vid}?{q}", ctx.cfg.public_url).into();
                item["url_expires"] = exp.into();
            }
        }
    }
    Ok(Reply::json(200, &v).header("Cache-Control", "no-store"))
}
