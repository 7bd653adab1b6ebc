//! The dashboard (SPEC §14): one page, its script and style, embedded in
//! the binary and served by the health listener with a strict policy
//! (`assets::SECURITY_HEADERS`: this origin only, never framed, never cached).
//! The page reads the admin endpoints (`/health`, `/api/connections`,
//! `/api/rooms`, `/api/publish`, `/api/kick`) and watches the feed
//! (`viewer.rs`).

use super::assets::Asset;

const JS: &str = "text/javascript; charset=utf-8";

/// Each file by path.
const FILES: [(&str, Asset); 5] = [
    (
        "/",
        asset("text/html; charset=utf-8", include_str!("index.html")),
    ),
    ("/dashboard.js", asset(JS, include_str!("dashboard.js"))),
    ("/charts.js", asset(JS, include_str!("charts.js"))),
    (
        "/dashboard.css",
        asset("text/css; charset=utf-8", include_str!("dashboard.css")),
    ),
    (
        "/favicon.svg",
        asset("image/svg+xml", include_str!("favicon.svg")),
    ),
];

const fn asset(content_type: &'static str, text: &'static str) -> Asset {
    Asset {
        content_type,
        body: text.as_bytes(),
    }
}

/// The dashboard's file at `path`, if it has one.
pub fn file(path: &str) -> Option<&'static Asset> {
    let path = if path == "/index.html" { "/" } else { path };
    FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, asset)| asset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::assets::SECURITY_HEADERS;

    #[test]
    fn the_headers_are_strict_and_the_page_has_nothing_inline() {
        for header in [
            "Content-Security-Policy: default-src 'self'\r\n",
            "X-Frame-Options: DENY\r\n",
            "X-Content-Type-Options: nosniff\r\n",
            "Referrer-Policy: no-referrer\r\n",
        ] {
            assert!(SECURITY_HEADERS.contains(header), "{header}");
        }
        let page = std::str::from_utf8(FILES[0].1.body).unwrap();
        // No inline script or style (the policy would block them), nothing
        // from another origin, no HTML made from strings.
        assert!(!page.contains("<script>") && !page.contains("style="));
        assert!(!page.contains("<style") && !page.contains("onclick"));
        for (path, asset) in FILES {
            let text = std::str::from_utf8(asset.body).unwrap();
            let foreign = text.contains("http://") || text.contains("https://");
            assert!(!foreign || path == "/favicon.svg", "{path}");
            assert!(!text.contains("innerHTML"), "{path}");
        }
        assert!(file("/index.html").is_some() && file("/").is_some());
        assert!(file("/nope.js").is_none());
    }
}
