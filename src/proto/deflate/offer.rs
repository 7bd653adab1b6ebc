//! Reading `Sec-WebSocket-Extensions` offers (RFC 7692 §5, §7.1) and the
//! answer to the one accepted.

/// The extension's registered name.
const NAME: &str = "permessage-deflate";
/// The LZ77 window tether's compressor uses: 2^15 bytes, the deflate maximum.
const FULL_WINDOW_BITS: u8 = 15;

/// What was agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// `server_max_window_bits` the client asked for (15 when it did not):
    /// match distances in what we send must stay under 2^bits.
    pub server_window_bits: u8,
    /// Whether the offer named `server_max_window_bits`, which the answer must then repeat.
    server_window_offered: bool,
}

impl Agreed {
    /// Whether a message of `len` bytes, compressed by tether's full-window
    /// compressor, respects the client's window: with no context takeover a
    /// match reaches back at most `len - 1` bytes, so any message no longer
    /// than the window does. Longer ones go uncompressed to that client.
    pub fn fits_window(&self, len: usize) -> bool {
        len <= 1usize << self.server_window_bits
    }

    /// The response header line (with its CRLF).
    pub fn response_header(&self) -> String {
        let window = if self.server_window_offered {
            format!("; server_max_window_bits={}", self.server_window_bits)
        } else {
            String::new()
        };
        format!(
            "Sec-WebSocket-Extensions: {NAME}; server_no_context_takeover; \
             client_no_context_takeover{window}\r\n"
        )
    }
}

/// The first acceptable permessage-deflate offer among the values of every
/// `Sec-WebSocket-Extensions` header, in order. An offer with an unknown or
/// repeated parameter, or a bad value, is declined (RFC 7692 §5.1) and the
/// next one is tried; other extensions are ignored.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Option<Agreed> {
    header_values
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(accept_offer)
}

/// One offer: `permessage-deflate; param[=value]; ...`.
fn accept_offer(offer: &str) -> Option<Agreed> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut agreed = Agreed {
        server_window_bits: FULL_WINDOW_BITS,
        server_window_offered: false,
    };
    let mut seen = [false; 4];
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
            None => (param, None),
        };
        let slot = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                agreed.server_window_bits = window_bits(value?)?;
                agreed.server_window_offered = true;
                2
            }
            // Any window the client uses can be inflated: no need to limit it.
            "client_max_window_bits" => {
                if let Some(value) = value {
                    window_bits(value)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
    }
    Some(agreed)
}

/// A parameter value may be a quoted string (RFC 7692 §5.2 via RFC 6455 §9.1).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
}

/// 8 to 15, written as 1*DIGIT without a leading zero (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(values: &[&str]) -> Option<u8> {
        negotiate(values.iter().copied()).map(|a| a.server_window_bits)
    }

    #[test]
    fn plain_offer_and_none() {
        assert_eq!(bits(&[]), None);
        assert_eq!(bits(&["x-webkit-deflate-frame"]), None);
        let agreed = negotiate(["permessage-deflate"]).unwrap();
        assert_eq!(agreed.server_window_bits, 15);
        assert_eq!(
            agreed.response_header(),
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover\r\n"
        );
    }

    #[test]
    fn every_parameter() {
        let agreed = negotiate([
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10; \
             server_no_context_takeover; client_no_context_takeover",
        ])
        .unwrap();
        assert_eq!(agreed.server_window_bits, 10);
        assert!(agreed
            .response_header()
            .ends_with("client_no_context_takeover; server_max_window_bits=10\r\n"));
        assert!(agreed.fits_window(1024) && !agreed.fits_window(1025));
        assert_eq!(
            bits(&["PerMessage-Deflate; client_max_window_bits=\"12\""]),
            Some(15)
        );
    }

    #[test]
    fn first_acceptable_offer_wins() {
        assert_eq!(
            bits(&["permessage-deflate; foo, permessage-deflate; server_max_window_bits=9, permessage-deflate"]),
            Some(9)
        );
        assert_eq!(
            bits(&[
                "x-other",
                "permessage-deflate; server_max_window_bits=7",
                "permessage-deflate; server_max_window_bits=12"
            ]),
            Some(12)
        );
    }

    #[test]
    fn malformed_offers_are_declined() {
        for offer in [
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; client_max_window_bits=\"9",
            "permessage-deflate; client_max_window_bits=99999999999999999999",
            "permessage-deflate;;",
            ";;;,,,=",
            "",
        ] {
            assert_eq!(bits(&[offer]), None, "{offer}");
        }
    }
}
