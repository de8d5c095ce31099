//! `~m~<len>~m~<payload>` framing and `~h~<n>` heartbeats.
//!
//! TradingView inherits its framing from the Socket.IO 0.6 transport. One websocket text
//! message carries one or more frames back to back; a frame's payload is either a JSON object or
//! a heartbeat `~h~<n>` that the client must echo.
//!
//! The decoder works in place over the caller's buffer and never copies a payload: it hands out
//! `&mut [u8]` because the JSON parser (`simd-json`) rewrites its input. [`FrameDecoder::decode`]
//! returns `Ok(None)` ("need more bytes") without consuming anything, checks every declared
//! length against [`FrameDecoder::max_frame_len`] before trusting it, and reports a length that
//! does not land on a frame boundary as [`FrameError::Misaligned`].
//!
//! # What the length counts
//!
//! No source states it (protocol.md §1.3); every recorded frame is ASCII, where bytes and
//! characters agree. We **encode** ASCII only (the JSON writer escapes every non-ASCII character
//! as `\uXXXX`), so the byte count we write is also the character count any peer would compute.
//! We **decode** the length as UTF-8 bytes first; when that does not land on a frame boundary
//! and the payload is not ASCII, we retry it as a count of Unicode scalar values and then of
//! UTF-16 code units (what a JavaScript server's `string.length` gives), and accept the first
//! that lands exactly on a boundary.
//!
//! This module may not do I/O, read clocks, log payloads or allocate without a bound.
#![forbid(unsafe_code)]

/// The default [`FrameDecoder::max_frame_len`]: 4 MiB.
///
/// A 20,000-bar load from `prodata` is about 1.9 MB in one frame (protocol.md §3.3), so the
/// default leaves twice that; raise it for 40,000-bar accounts.
pub const DEFAULT_MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// The marker that opens a frame and separates its length from its payload.
const MARK: &[u8] = b"~m~";
/// The prefix of a heartbeat payload.
const HEARTBEAT: &[u8] = b"~h~";
/// Digits accepted in a length (enough for 9,999,999,999; anything longer is garbage).
const MAX_LEN_DIGITS: usize = 10;

/// One decoded frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A JSON payload, borrowed mutably from the input so that the parser can work in place.
    Json(&'a mut [u8]),
    /// A heartbeat `~h~<n>`; echo it with [`encode_heartbeat`].
    Heartbeat(u64),
}

/// A malformed frame. The input is bad; the connection that sent it should be treated as
/// misbehaving, but the decoder itself has no state to corrupt and stays usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The bytes do not start with `~m~`.
    #[error("frame does not start with ~m~ (at byte {offset})")]
    MissingMarker {
        /// Offset of the bad frame within the message.
        offset: usize,
    },
    /// The length is not a decimal number followed by `~m~`.
    #[error("frame length is not a decimal number (at byte {offset})")]
    InvalidLength {
        /// Offset of the bad frame within the message.
        offset: usize,
    },
    /// The declared length is above the configured limit.
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLong {
        /// The declared length (saturated at `u64::MAX`).
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// The declared length does not end on a frame boundary (`~m~` or the end of the message),
    /// whether counted in bytes, characters or UTF-16 units.
    #[error("frame length {len} does not end on a frame boundary (at byte {offset})")]
    Misaligned {
        /// The declared length.
        len: usize,
        /// Offset of the bad frame within the message.
        offset: usize,
    },
    /// The message ends inside a frame.
    #[error("message ends inside a frame (at byte {offset})")]
    Truncated {
        /// Offset of the incomplete frame within the message.
        offset: usize,
    },
    /// A `~h~` payload whose counter is not a decimal `u64`.
    #[error("invalid heartbeat payload")]
    InvalidHeartbeat,
}

/// Splits frames out of a byte buffer. Holds only its limit: cheap to copy, no state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    max_frame_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder with [`DEFAULT_MAX_FRAME_LEN`].
    pub const fn new() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// Sets the largest payload length accepted. Declared lengths above it are
    /// [`FrameError::TooLong`] before any byte of the payload is looked at.
    #[must_use]
    pub const fn with_max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max;
        self
    }

    /// The largest payload length accepted.
    pub const fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Decodes the frame at the start of `buf`, for a byte *stream* that may end mid-frame.
    ///
    /// Returns `Ok(Some((frame, consumed)))` with `consumed <= buf.len()`, or `Ok(None)` when
    /// `buf` holds only the beginning of a frame: nothing is consumed, call again with more
    /// bytes. The length is checked against the limit as soon as its digits are complete.
    ///
    /// # Errors
    ///
    /// Any [`FrameError`] but `Truncated`. Offsets in errors are relative to `buf`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tvdatafeed::protocol::frame::{Frame, FrameDecoder};
    ///
    /// let dec = FrameDecoder::new();
    /// let mut buf = *b"~m~4~m~~h~7~m~2~m~{}";
    /// let (frame, used) = dec.decode(&mut buf)?.expect("complete");
    /// assert_eq!(frame, Frame::Heartbeat(7));
    /// assert_eq!(used, 11);
    /// assert!(dec.decode(&mut buf[11..15])?.is_none()); // "~m~2": need more
    /// # Ok::<(), tvdatafeed::protocol::frame::FrameError>(())
    /// ```
    pub fn decode<'a>(&self, buf: &'a mut [u8]) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        match self.header(buf, 0)? {
            Header::NeedMore => Ok(None),
            Header::Complete { start, len } => {
                let end = start + len;
                if end > buf.len() {
                    return Ok(None);
                }
                // The next bytes must open a frame, or be a (possibly partial) "~m~".
                let rest = &buf[end..];
                let n = rest.len().min(MARK.len());
                if rest[..n] != MARK[..n] {
                    let end = self.realign(buf, start, len, 0)?;
                    return Ok(Some((payload(&mut buf[start..end])?, end)));
                }
                Ok(Some((payload(&mut buf[start..end])?, end)))
            }
        }
    }

    /// Iterates over the frames of one complete websocket message.
    ///
    /// Unlike [`FrameDecoder::decode`], the end of `msg` is the end of the last frame: a
    /// message that stops inside a frame yields [`FrameError::Truncated`]. After the first
    /// error the iterator is fused; the frames before it were yielded and stay valid.
    ///
    /// # Examples
    ///
    /// ```
    /// use tvdatafeed::protocol::frame::{Frame, FrameDecoder};
    ///
    /// let mut msg = br#"~m~2~m~{}~m~4~m~~h~1"#.to_vec();
    /// let frames: Vec<_> = FrameDecoder::new().frames(&mut msg).collect::<Result<_, _>>()?;
    /// assert_eq!(frames.len(), 2);
    /// assert_eq!(frames[1], Frame::Heartbeat(1));
    /// # Ok::<(), tvdatafeed::protocol::frame::FrameError>(())
    /// ```
    pub fn frames<'a>(&self, msg: &'a mut [u8]) -> Frames<'a> {
        Frames {
            decoder: *self,
            rest: msg,
            offset: 0,
            failed: false,
        }
    }

    /// Parses `~m~<digits>~m~` at the start of `buf`.
    fn header(&self, buf: &[u8], offset: usize) -> Result<Header, FrameError> {
        let n = buf.len().min(MARK.len());
        if buf[..n] != MARK[..n] {
            return Err(FrameError::MissingMarker { offset });
        }
        if buf.len() < MARK.len() {
            return Ok(Header::NeedMore);
        }
        let mut len: u64 = 0;
        let mut i = MARK.len();
        while i < buf.len() && buf[i].is_ascii_digit() {
            if i - MARK.len() == MAX_LEN_DIGITS {
                return Err(FrameError::TooLong {
                    len: u64::MAX,
                    max: self.max_frame_len,
                });
            }
            len = len * 10 + u64::from(buf[i] - b'0');
            i += 1;
        }
        let digits = i - MARK.len();
        if i == buf.len() {
            // Digits so far are fine; the closing marker has not arrived.
            return if digits > 0 && len > self.max_frame_len as u64 {
                Err(FrameError::TooLong {
                    len,
                    max: self.max_frame_len,
                })
            } else {
                Ok(Header::NeedMore)
            };
        }
        if digits == 0 {
            return Err(FrameError::InvalidLength { offset });
        }
        if len > self.max_frame_len as u64 {
            return Err(FrameError::TooLong {
                len,
                max: self.max_frame_len,
            });
        }
        let tail = &buf[i..];
        let n = tail.len().min(MARK.len());
        if tail[..n] != MARK[..n] {
            return Err(FrameError::InvalidLength { offset });
        }
        if tail.len() < MARK.len() {
            return Ok(Header::NeedMore);
        }
        Ok(Header::Complete {
            start: i + MARK.len(),
            len: len as usize,
        })
    }

    /// The declared byte length missed the boundary: try it as a count of characters, then of
    /// UTF-16 units, within the rest of `buf`. Returns the payload's end (relative to `buf`).
    fn realign(
        &self,
        buf: &[u8],
        start: usize,
        len: usize,
        offset: usize,
    ) -> Result<usize, FrameError> {
        let misaligned = FrameError::Misaligned { len, offset };
        let body = &buf[start..];
        if body.is_ascii() {
            return Err(misaligned);
        }
        let at_boundary = |end: usize| end == buf.len() || buf[end..].starts_with(MARK);
        for utf16 in [false, true] {
            // Walk `len` units of text; the scan is bounded by the buffer, not by `len`.
            let mut units = 0usize;
            let mut pos = start;
            while units < len && pos < buf.len() {
                let (width, u) = utf8_char(&buf[pos..]);
                pos += width;
                units += if utf16 { u } else { 1 };
            }
            if units == len && at_boundary(pos) && std::str::from_utf8(&buf[start..pos]).is_ok() {
                return Ok(pos);
            }
        }
        Err(misaligned)
    }
}

/// The byte width of the UTF-8 sequence at the start of `b` and its UTF-16 length. Invalid
/// bytes count as one byte and one unit; [`FrameDecoder::realign`] rejects them afterwards.
fn utf8_char(b: &[u8]) -> (usize, usize) {
    let width = match b[0] {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    };
    let width = width.min(b.len());
    (width, if width == 4 { 2 } else { 1 })
}

enum Header {
    NeedMore,
    Complete { start: usize, len: usize },
}

fn payload(p: &mut [u8]) -> Result<Frame<'_>, FrameError> {
    if let Some(digits) = p.strip_prefix(HEARTBEAT) {
        return parse_heartbeat(digits).map(Frame::Heartbeat);
    }
    Ok(Frame::Json(p))
}

fn parse_heartbeat(digits: &[u8]) -> Result<u64, FrameError> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(FrameError::InvalidHeartbeat);
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(FrameError::InvalidHeartbeat)
    })
}

/// Iterator over the frames of one websocket message; see [`FrameDecoder::frames`].
#[derive(Debug)]
pub struct Frames<'a> {
    decoder: FrameDecoder,
    rest: &'a mut [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Frames<'a> {
    /// Bytes of the message not yet decoded.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn next_frame(&mut self) -> Result<Frame<'a>, FrameError> {
        let offset = self.offset;
        let buf = std::mem::take(&mut self.rest);
        let (start, len) = match self.decoder.header(buf, offset)? {
            Header::NeedMore => return Err(FrameError::Truncated { offset }),
            Header::Complete { start, len } => (start, len),
        };
        let mut end = start + len;
        if end > buf.len() {
            // Too short in bytes: a character-counted length would only be shorter still.
            return Err(FrameError::Truncated { offset });
        }
        if end != buf.len() && !buf[end..].starts_with(MARK) {
            end = self
                .decoder
                .realign(buf, start, len, offset)
                .map_err(|_| FrameError::Misaligned { len, offset })?;
        }
        let (frame, rest) = buf.split_at_mut(end);
        self.rest = rest;
        self.offset += end;
        payload(&mut frame[start..])
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let r = self.next_frame();
        self.failed = r.is_err();
        Some(r)
    }
}

impl std::iter::FusedIterator for Frames<'_> {}

/// Appends the frame `~m~<len>~m~<payload>` to `out`, `len` counting bytes.
///
/// Callers that want peers of every kind to agree on the length keep `payload` ASCII, as every
/// encoder in this crate does.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + 16);
    out.extend_from_slice(MARK);
    push_decimal(payload.len() as u64, out);
    out.extend_from_slice(MARK);
    out.extend_from_slice(payload);
}

/// Appends the heartbeat frame `~m~<len>~m~~h~<n>` to `out`: the echo a client owes the server.
///
/// # Examples
///
/// ```
/// let mut out = Vec::new();
/// tvdatafeed::protocol::frame::encode_heartbeat(16, &mut out);
/// assert_eq!(out, b"~m~5~m~~h~16");
/// ```
pub fn encode_heartbeat(n: u64, out: &mut Vec<u8>) {
    let mut digits = Vec::with_capacity(24);
    digits.extend_from_slice(HEARTBEAT);
    push_decimal(n, &mut digits);
    encode_frame(&digits, out);
}

/// Wraps payload bytes already written at `out[start..]` in a frame header, in place.
pub(crate) fn frame_in_place(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    let mut header = Vec::with_capacity(16);
    header.extend_from_slice(MARK);
    push_decimal(len as u64, &mut header);
    header.extend_from_slice(MARK);
    out.splice(start..start, header);
}

/// The two-digit strings `00` to `99`, for writing integers two digits at a time.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `n`'s decimal digits at the end of `buf` and returns where they start (`u64::MAX`
/// has 20 digits: they always fit).
pub(crate) fn decimal_digits(mut n: u64, buf: &mut [u8; 20]) -> usize {
    let mut i = buf.len();
    while n >= 100 {
        let r = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
    }
    if n >= 10 {
        let r = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    i
}

pub(crate) fn push_decimal(n: u64, out: &mut Vec<u8>) {
    let mut tmp = [0u8; 20];
    let i = decimal_digits(n, &mut tmp);
    out.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(msg: &mut [u8]) -> Result<Vec<String>, FrameError> {
        FrameDecoder::new()
            .frames(msg)
            .map(|f| {
                f.map(|f| match f {
                    Frame::Json(p) => String::from_utf8(p.to_vec()).unwrap(),
                    Frame::Heartbeat(n) => format!("hb{n}"),
                })
            })
            .collect()
    }

    #[test]
    fn real_heartbeats_decode_and_echo_byte_for_byte() {
        for (wire, n) in [(&b"~m~4~m~~h~7"[..], 7), (&b"~m~5~m~~h~16"[..], 16)] {
            let mut buf = wire.to_vec();
            let (frame, used) = FrameDecoder::new().decode(&mut buf).unwrap().unwrap();
            assert_eq!(frame, Frame::Heartbeat(n));
            assert_eq!(used, wire.len());
            let mut echo = Vec::new();
            encode_heartbeat(n, &mut echo);
            assert_eq!(echo, wire);
        }
    }

    #[test]
    fn several_frames_in_one_message() {
        let mut msg = br#"~m~2~m~{}~m~4~m~~h~9~m~7~m~{"a":1}"#.to_vec();
        assert_eq!(collect(&mut msg).unwrap(), ["{}", "hb9", r#"{"a":1}"#]);
    }

    #[test]
    fn decode_needs_more_without_consuming() {
        let full = br#"~m~7~m~{"a":1}"#;
        let dec = FrameDecoder::new();
        for cut in 0..full.len() {
            let mut part = full[..cut].to_vec();
            assert_eq!(dec.decode(&mut part), Ok(None), "cut at {cut}");
        }
        // A partial marker of the next frame is not an error in stream mode.
        let mut more = br#"~m~7~m~{"a":1}~m"#.to_vec();
        let (_, used) = dec.decode(&mut more).unwrap().unwrap();
        assert_eq!(used, full.len());
    }

    #[test]
    fn lengths_are_checked_against_the_limit_before_the_payload() {
        let dec = FrameDecoder::new().with_max_frame_len(10);
        let mut buf = b"~m~11~m~".to_vec();
        assert_eq!(
            dec.decode(&mut buf),
            Err(FrameError::TooLong { len: 11, max: 10 })
        );
        // Even before the closing marker arrives.
        let mut buf = b"~m~99".to_vec();
        assert!(matches!(
            dec.decode(&mut buf),
            Err(FrameError::TooLong { .. })
        ));
        let mut absurd = b"~m~99999999999999999999~m~x".to_vec();
        assert!(matches!(
            FrameDecoder::new().decode(&mut absurd),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        let mut m = b"{\"m\":1}".to_vec();
        assert_eq!(
            collect(&mut m),
            Err(FrameError::MissingMarker { offset: 0 })
        );
        let mut m = b"~m~x~m~{}".to_vec();
        assert_eq!(
            collect(&mut m),
            Err(FrameError::InvalidLength { offset: 0 })
        );
        let mut m = b"~m~~m~{}".to_vec();
        assert_eq!(
            collect(&mut m),
            Err(FrameError::InvalidLength { offset: 0 })
        );
        let mut m = b"~m~2~x~{}".to_vec();
        assert_eq!(
            collect(&mut m),
            Err(FrameError::InvalidLength { offset: 0 })
        );
        let mut m = b"~m~3~m~{}".to_vec();
        assert_eq!(collect(&mut m), Err(FrameError::Truncated { offset: 0 }));
        let mut m = b"~m~1~m~{}".to_vec();
        assert_eq!(
            collect(&mut m),
            Err(FrameError::Misaligned { len: 1, offset: 0 })
        );
        let mut m = b"~m~2~m~{}~m~1~m~{}".to_vec();
        assert_eq!(
            collect(&mut m),
            Err(FrameError::Misaligned { len: 1, offset: 9 })
        );
        let mut m = b"~m~4~m~~h~x1".to_vec();
        assert_eq!(
            collect(&mut m),
            Err(FrameError::Misaligned { len: 4, offset: 0 })
        );
        let mut m = b"~m~5~m~~h~x1".to_vec();
        assert_eq!(collect(&mut m), Err(FrameError::InvalidHeartbeat));
        let mut m = b"~m~2~m~{}~m~".to_vec();
        assert_eq!(collect(&mut m), Err(FrameError::Truncated { offset: 9 }));
    }

    #[test]
    fn non_ascii_lengths_in_bytes_characters_and_utf16_units() {
        // "é" is 2 bytes, 1 char, 1 UTF-16 unit; "😀" is 4 bytes, 1 char, 2 UTF-16 units.
        let payload = "{\"d\":\"é😀\"}";
        assert_eq!(payload.len(), 14);
        assert_eq!(payload.chars().count(), 10);
        assert_eq!(payload.encode_utf16().count(), 11);
        for declared in [14, 10, 11] {
            let mut msg = format!("~m~{declared}~m~{payload}~m~2~m~{{}}").into_bytes();
            assert_eq!(
                collect(&mut msg).unwrap(),
                [payload, "{}"],
                "declared {declared}"
            );
            let mut msg = format!("~m~{declared}~m~{payload}").into_bytes();
            assert_eq!(
                collect(&mut msg).unwrap(),
                [payload],
                "declared {declared} at end"
            );
        }
        let mut msg = format!("~m~12~m~{payload}").into_bytes();
        assert!(matches!(
            collect(&mut msg),
            Err(FrameError::Misaligned { .. })
        ));
    }

    #[test]
    fn encode_frame_counts_bytes() {
        let mut out = Vec::new();
        encode_frame(br#"{"m":"set_locale","p":["en","US"]}"#, &mut out);
        assert_eq!(out, br#"~m~34~m~{"m":"set_locale","p":["en","US"]}"#);
        let mut out = b"xx".to_vec();
        out.extend_from_slice(b"{}");
        frame_in_place(&mut out, 2);
        assert_eq!(out, b"xx~m~2~m~{}");
    }
}
