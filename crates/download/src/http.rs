//! A thin layer over ureq: redirects are followed here rather than by ureq, so
//! we can read Hugging Face's checksum headers on the hop that carries them
//! and keep the bearer token away from the CDN the Hub redirects to.

use std::time::Duration;

use url::Url;

use crate::error::DownloadError;

/// How many redirects a request may follow (the Hub uses one, two for a
/// renamed repository).
const MAX_REDIRECTS: u32 = 10;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Follow every redirect (the download itself).
    All,
    /// Stop at a redirect to another origin. Used by the HEAD probe: CDN URLs
    /// are usually presigned for GET only, so a HEAD there can fail for reasons
    /// that say nothing about the file.
    SameOrigin,
}

/// Checksum and size announced by the server, gathered across redirect hops.
#[derive(Clone, Debug, Default)]
pub(crate) struct Announced {
    /// `X-Linked-Etag` of the first hop that had one: the Hub sets it on the
    /// `resolve` reply of an LFS file to the file's SHA-256.
    pub linked_sha: Option<String>,
    /// `X-Linked-Size` (the Hub's size of the LFS object; the redirect's own
    /// Content-Length is that of the empty redirect body).
    pub linked_size: Option<u64>,
    /// `ETag` of a reply from the requested origin, when it is a SHA-256 (the Hub
    /// sets it to the LFS sha256; for plain git files it is a 40-digit blob id and
    /// is ignored). ETags of other origins (the CDN) are never trusted: their
    /// format is theirs.
    pub etag_sha: Option<String>,
}

impl Announced {
    pub(crate) fn sha256(&self) -> Option<String> {
        self.linked_sha.clone().or_else(|| self.etag_sha.clone())
    }
}

pub(crate) struct Reply {
    pub status: u16,
    /// URL that produced `response` (after redirects).
    pub url: String,
    /// Whether `url` is on the origin first asked.
    pub same_origin: bool,
    pub announced: Announced,
    pub response: ureq::Response,
}

pub(crate) struct Client {
    agent: ureq::Agent,
    token: Option<String>,
}

pub(crate) struct ClientConfig<'a> {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub user_agent: &'a str,
    pub proxy: Option<&'a str>,
    pub token: Option<&'a str>,
}

impl Client {
    pub(crate) fn new(cfg: &ClientConfig<'_>) -> Result<Client, DownloadError> {
        // timeout_read is a per-read socket timeout, i.e. an idle timeout: what a
        // transfer of 80+ GiB needs (a whole-request deadline would not work).
        let mut b = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(cfg.connect_timeout)
            .timeout_read(cfg.read_timeout)
            .timeout_write(cfg.read_timeout)
            .user_agent(cfg.user_agent);
        if let Some(p) = cfg.proxy {
            let proxy = ureq::Proxy::new(p).map_err(|e| DownloadError::BadUrl {
                url: p.to_string(),
                reason: format!("bad proxy: {e}"),
            })?;
            b = b.proxy(proxy);
        }
        Ok(Client {
            agent: b.build(),
            token: cfg.token.map(str::to_string),
        })
    }

    /// Send `method` to `url`, optionally asking for the bytes from `range_from`
    /// on, following redirects per `follow`. Non-2xx statuses are returned as
    /// replies (the caller maps them); transport failures become errors.
    pub(crate) fn send(
        &self,
        method: &str,
        url: &str,
        range_from: Option<u64>,
        follow: Follow,
    ) -> Result<Reply, DownloadError> {
        let origin = parse_http_url(url)?;
        let mut cur = origin.clone();
        let mut announced = Announced::default();
        for _ in 0..=MAX_REDIRECTS {
            let same_origin = cur.origin() == origin.origin();
            let mut req = self.agent.request_url(method, &cur);
            if let Some(from) = range_from {
                req = req.set("Range", &format!("bytes={from}-"));
            }
            if let (Some(t), true) = (&self.token, same_origin) {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            let resp = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(ureq::Error::Transport(t)) => return Err(transport_error(cur.as_str(), &t)),
            };
            collect(&resp, same_origin, &mut announced);
            let status = resp.status();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let loc = resp
                    .header("location")
                    .ok_or_else(|| DownloadError::Protocol {
                        url: cur.to_string(),
                        message: format!("HTTP {status} redirect without a Location header"),
                    })?;
                let next = cur.join(loc).map_err(|e| DownloadError::BadUrl {
                    url: loc.to_string(),
                    reason: format!("bad redirect target: {e}"),
                })?;
                if !matches!(next.scheme(), "http" | "https") {
                    return Err(DownloadError::BadUrl {
                        url: next.to_string(),
                        reason: "redirect to a non-HTTP URL".into(),
                    });
                }
                if follow == Follow::SameOrigin && next.origin() != origin.origin() {
                    return Ok(Reply {
                        status,
                        url: cur.to_string(),
                        same_origin,
                        announced,
                        response: resp,
                    });
                }
                cur = next;
                continue;
            }
            return Ok(Reply {
                status,
                url: cur.to_string(),
                same_origin,
                announced,
                response: resp,
            });
        }
        Err(DownloadError::TooManyRedirects {
            url: url.to_string(),
        })
    }
}

pub(crate) fn parse_http_url(url: &str) -> Result<Url, DownloadError> {
    let u = Url::parse(url).map_err(|e| DownloadError::BadUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err(DownloadError::BadUrl {
            url: url.to_string(),
            reason: "only http and https URLs with a host are supported".into(),
        });
    }
    Ok(u)
}

fn collect(resp: &ureq::Response, same_origin: bool, a: &mut Announced) {
    if a.linked_sha.is_none() {
        a.linked_sha = resp.header("x-linked-etag").and_then(parse_sha256_etag);
    }
    if a.linked_size.is_none() {
        a.linked_size = resp
            .header("x-linked-size")
            .and_then(|v| v.trim().parse().ok());
    }
    if same_origin && a.etag_sha.is_none() {
        a.etag_sha = resp.header("etag").and_then(parse_sha256_etag);
    }
}

/// `W/"<64 hex>"` or `"<64 hex>"` → lowercase hex; anything else → None.
pub(crate) fn parse_sha256_etag(v: &str) -> Option<String> {
    let v = v.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v.trim_matches('"');
    is_sha256_hex(v).then(|| v.to_ascii_lowercase())
}

pub(crate) fn is_sha256_hex(v: &str) -> bool {
    v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())
}

fn transport_error(url: &str, t: &ureq::Transport) -> DownloadError {
    match t.kind() {
        ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => DownloadError::BadUrl {
            url: url.to_string(),
            reason: t.to_string(),
        },
        _ => DownloadError::Network {
            url: url.to_string(),
            message: t.to_string(),
        },
    }
}

/// `bytes START-END/TOTAL` or `bytes */TOTAL` → (start, total). Total may be `*`.
pub(crate) fn parse_content_range(v: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let start = match span.trim() {
        "*" => None,
        s => {
            let (a, b) = s.split_once('-')?;
            let a: u64 = a.trim().parse().ok()?;
            let b: u64 = b.trim().parse().ok()?;
            if b < a {
                return None;
            }
            Some(a)
        }
    };
    Some((start, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_parsing() {
        let h = "a".repeat(64);
        assert_eq!(parse_sha256_etag(&format!("\"{h}\"")), Some(h.clone()));
        assert_eq!(
            parse_sha256_etag(&format!("W/\"{}\"", h.to_uppercase())),
            Some(h.clone())
        );
        // A git blob id (sha1) is not a sha256.
        assert_eq!(parse_sha256_etag(&format!("\"{}\"", "b".repeat(40))), None);
        assert_eq!(parse_sha256_etag("\"xyz\""), None);
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((Some(10), Some(100)))
        );
        assert_eq!(parse_content_range("bytes */100"), Some((None, Some(100))));
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((Some(0), None)));
        assert_eq!(parse_content_range("bytes 9-1/100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
