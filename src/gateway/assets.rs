//! Static files the health listener serves (SPEC §14): the JavaScript client
//! library, embedded in the binary so that a page on the gateway's origin can
//! `import('/tether.js')` with no outside request and no build step.

/// Headers every served page or script carries: everything only from the
/// gateway's own origin (nothing inline), no MIME sniffing, never framed,
/// no referrer (`Cache-Control: no-store` comes with every answer).
pub const SECURITY_HEADERS: &str = "Content-Security-Policy: default-src 'self'\r\n\
X-Frame-Options: DENY\r\n\
X-Content-Type-Options: nosniff\r\n\
Referrer-Policy: no-referrer\r\n";

/// One embedded file.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const TETHER_JS: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("../../clients/js/tether.js").as_bytes(),
};

/// The paths served, for `is_endpoint` on a shared port.
pub const PATHS: [&str; 1] = ["/tether.js"];

/// The embedded file at `path`, if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    match path {
        "/tether.js" => Some(&TETHER_JS),
        _ => None,
    }
}
