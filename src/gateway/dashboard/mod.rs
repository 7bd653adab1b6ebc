//! The dashboard (SPEC §14): one page, its script and style, embedded in
//! the binary and served by the health listener with a strict policy
//! (scripts and styles from this origin only, never framed, never cached).
//! The page reads the admin endpoints (`/health`, `/api/connections`,
//! `/api/rooms`, `/api/publish`) and watches the feed (`viewer.rs`).

/// The headers of every dashboard file: nothing inline, nothing from
/// elsewhere, no framing, no sniffing, no referrer (`Cache-Control:
/// no-store` comes with every answer).
pub const SECURITY_HEADERS: &str = "Content-Security-Policy: default-src 'self'\r\n\
X-Frame-Options: DENY\r\n\
X-Content-Type-Options: nosniff\r\n\
Referrer-Policy: no-referrer\r\n";

/// `(path, content type, contents)` of each file.
const FILES: [(&str, &str, &str); 5] = [
    ("/", "text/html; charset=utf-8", include_str!("index.html")),
    (
        "/dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard.js"),
    ),
    (
        "/charts.js",
        "text/javascript; charset=utf-8",
        include_str!("charts.js"),
    ),
    (
        "/dashboard.css",
        "text/css; charset=utf-8",
        include_str!("dashboard.css"),
    ),
    ("/favicon.svg", "image/svg+xml", include_str!("favicon.svg")),
];

/// The content type and contents of the file at `path`, if the dashboard
/// has one (served with [`SECURITY_HEADERS`]).
pub fn file(path: &str) -> Option<(&'static str, &'static [u8])> {
    let path = if path == "/index.html" { "/" } else { path };
    FILES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, content_type, body)| (*content_type, body.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let page = FILES[0].2;
        // No inline script or style (the policy would block them), nothing
        // from another origin, no HTML made from strings.
        assert!(!page.contains("<script>") && !page.contains("style="));
        assert!(!page.contains("<style") && !page.contains("onclick"));
        for (path, _, text) in FILES {
            let foreign = text.contains("http://") || text.contains("https://");
            assert!(!foreign || path == "/favicon.svg", "{path}");
            assert!(!text.contains("innerHTML"), "{path}");
        }
        assert_eq!(file("/index.html"), file("/"));
        assert!(file("/nope.js").is_none());
    }
}
