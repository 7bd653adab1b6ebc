//! RESP2, the Redis wire protocol (https://redis.io/docs/latest/develop/reference/protocol-spec/):
//! commands encoded as arrays of bulk strings, replies decoded with bounds on
//! every length so that a broken or hostile peer cannot make us allocate more
//! than the caller allows.
//!
//! Our own small codec rather than the `redis-protocol` crate: tether needs
//! only RESP2's five types, decoding from a borrowed slice with explicit size
//! and depth limits, and no `bytes`/`Bytes` types in the core; the whole codec
//! is shorter than the glue the crate would need.

/// One decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(Vec<u8>),
    /// `-ERR ...`
    Error(Vec<u8>),
    /// `:1`
    Integer(i64),
    /// `$n` with its bytes; `$-1` is `None`.
    Bulk(Option<Vec<u8>>),
    /// `*n` with its elements; `*-1` is `None`.
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The bytes of a simple or bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// The bytes of a simple or bulk string, moved out.
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Value::Simple(b) | Value::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
}

/// Why bytes from the broker are not RESP2 we accept; the link is then reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Not RESP2: an unknown type byte, a bad number, a missing CRLF.
    Syntax,
    /// A length over the [`Limits`].
    TooLarge,
}

/// Bounds on one decoded reply.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest bulk string (and simple line).
    pub max_bulk: usize,
    /// Most elements in one array.
    pub max_elements: usize,
    /// Deepest nesting of arrays.
    pub max_depth: usize,
}

/// The longest `*`/`$`/`:` header line we read (a 64-bit number and CRLF fit).
const MAX_NUMBER_LINE: usize = 24;

/// Decodes one reply from the front of `buf`: `Ok(None)` when more bytes are
/// needed, else the value and how many bytes it took.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, DecodeError> {
    let mut pos = 0;
    match value(buf, &mut pos, limits, 0)? {
        Some(v) => Ok(Some((v, pos))),
        None => Ok(None),
    }
}

fn value(
    buf: &[u8],
    pos: &mut usize,
    limits: &Limits,
    depth: usize,
) -> Result<Option<Value>, DecodeError> {
    let Some(&kind) = buf.get(*pos) else {
        return Ok(None);
    };
    *pos += 1;
    match kind {
        b'+' | b'-' => {
            let Some(line) = line(buf, pos, limits.max_bulk)? else {
                return Ok(None);
            };
            let line = line.to_vec();
            Ok(Some(if kind == b'+' {
                Value::Simple(line)
            } else {
                Value::Error(line)
            }))
        }
        b':' => Ok(number(buf, pos)?.map(Value::Integer)),
        b'$' => {
            let Some(len) = number(buf, pos)? else {
                return Ok(None);
            };
            if len == -1 {
                return Ok(Some(Value::Bulk(None)));
            }
            let len = usize::try_from(len).map_err(|_| DecodeError::Syntax)?;
            if len > limits.max_bulk {
                return Err(DecodeError::TooLarge);
            }
            let end = pos.checked_add(len).ok_or(DecodeError::TooLarge)?;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(DecodeError::Syntax);
            }
            let bytes = buf[*pos..end].to_vec();
            *pos = end + 2;
            Ok(Some(Value::Bulk(Some(bytes))))
        }
        b'*' => {
            let Some(count) = number(buf, pos)? else {
                return Ok(None);
            };
            if count == -1 {
                return Ok(Some(Value::Array(None)));
            }
            let count = usize::try_from(count).map_err(|_| DecodeError::Syntax)?;
            if count > limits.max_elements || depth >= limits.max_depth {
                return Err(DecodeError::TooLarge);
            }
            let mut items = Vec::with_capacity(count.min(16));
            for _ in 0..count {
                match value(buf, pos, limits, depth + 1)? {
                    Some(v) => items.push(v),
                    None => return Ok(None),
                }
            }
            Ok(Some(Value::Array(Some(items))))
        }
        _ => Err(DecodeError::Syntax),
    }
}

/// The bytes up to the next CRLF (at most `max` of them), moving past it.
fn line<'a>(buf: &'a [u8], pos: &mut usize, max: usize) -> Result<Option<&'a [u8]>, DecodeError> {
    let rest = &buf[*pos..];
    match rest.iter().position(|&b| b == b'\r') {
        Some(i) if i > max => Err(DecodeError::TooLarge),
        Some(i) => match rest.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => {
                *pos += i + 2;
                Ok(Some(&rest[..i]))
            }
            Some(_) => Err(DecodeError::Syntax),
        },
        None if rest.len() > max => Err(DecodeError::TooLarge),
        None => Ok(None),
    }
}

fn number(buf: &[u8], pos: &mut usize) -> Result<Option<i64>, DecodeError> {
    let Some(line) = line(buf, pos, MAX_NUMBER_LINE)? else {
        return Ok(None);
    };
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .map(Some)
        .ok_or(DecodeError::Syntax)
}

/// Appends one command (an array of bulk strings) to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The encoded size of [`encode_command`]'s output, without encoding.
pub fn command_len(args: &[&[u8]]) -> usize {
    let header = |n: usize| 3 + decimal_digits(n);
    header(args.len())
        + args
            .iter()
            .map(|a| header(a.len()) + a.len() + 2)
            .sum::<usize>()
}

fn decimal_digits(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bulk: 64,
        max_elements: 8,
        max_depth: 2,
    };

    fn one(input: &[u8]) -> Result<Option<(Value, usize)>, DecodeError> {
        decode(input, &LIMITS)
    }

    #[test]
    fn decodes_every_type() {
        assert_eq!(
            one(b"+OK\r\n"),
            Ok(Some((Value::Simple(b"OK".to_vec()), 5)))
        );
        assert_eq!(
            one(b"-ERR no\r\nrest"),
            Ok(Some((Value::Error(b"ERR no".to_vec()), 9)))
        );
        assert_eq!(one(b":-42\r\n"), Ok(Some((Value::Integer(-42), 6))));
        assert_eq!(one(b"$-1\r\n"), Ok(Some((Value::Bulk(None), 5))));
        assert_eq!(one(b"*-1\r\n"), Ok(Some((Value::Array(None), 5))));
        let message = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhe\r\no\r\n";
        let (v, used) = one(message).unwrap().unwrap();
        assert_eq!(used, message.len());
        assert_eq!(
            v,
            Value::Array(Some(vec![
                Value::Bulk(Some(b"message".to_vec())),
                Value::Bulk(Some(b"ch".to_vec())),
                Value::Bulk(Some(b"he\r\no".to_vec())),
            ]))
        );
        // Every strict prefix needs more bytes.
        for cut in 0..message.len() {
            assert_eq!(one(&message[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn refuses_bad_and_oversized_input() {
        assert_eq!(one(b"?x\r\n"), Err(DecodeError::Syntax));
        assert_eq!(one(b":12a\r\n"), Err(DecodeError::Syntax));
        assert_eq!(one(b"+OK\rx"), Err(DecodeError::Syntax));
        assert_eq!(one(b"$3\r\nabcd\r\n"), Err(DecodeError::Syntax));
        assert_eq!(one(b"$-2\r\n"), Err(DecodeError::Syntax));
        assert_eq!(one(b"$65\r\n"), Err(DecodeError::TooLarge));
        assert_eq!(one(b"*9\r\n"), Err(DecodeError::TooLarge));
        assert_eq!(one(b"*1\r\n*1\r\n*1\r\n:1\r\n"), Err(DecodeError::TooLarge));
        assert_eq!(one(&[b'+'; 80]), Err(DecodeError::TooLarge));
        assert_eq!(
            one(b":99999999999999999999999999\r\n"),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(one(b"$9223372036854775807\r\n"), Err(DecodeError::TooLarge));
    }

    #[test]
    fn encodes_commands_with_their_length() {
        let mut out = Vec::new();
        let args: [&[u8]; 3] = [b"PUBLISH", b"ch", b""];
        encode_command(&mut out, &args);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$0\r\n\r\n");
        assert_eq!(command_len(&args), out.len());
        let long = vec![b'x'; 1234];
        let args: [&[u8]; 1] = [&long];
        out.clear();
        encode_command(&mut out, &args);
        assert_eq!(command_len(&args), out.len());
        let roomy = Limits {
            max_bulk: 2000,
            ..LIMITS
        };
        assert_eq!(decode(&out, &roomy).unwrap().unwrap().1, out.len());
    }
}
