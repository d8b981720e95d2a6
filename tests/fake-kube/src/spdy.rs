//! SPDY/3.1 as kubectl's streams speak it (moby/spdystream): the frames a port-forward
//! uses, the name/value header blocks (32-bit counts and lengths) and their compression
//! (one zlib stream per direction for the whole connection, the SPDY/3 dictionary, a sync
//! flush after every block). No flow control: spdystream neither sends nor honours
//! WINDOW_UPDATE, so a sender that waited for one would stall after 64 KiB.

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// RST_STREAM's status for a stream given up (the one Kubernetes sends).
pub const CANCEL: u32 = 5;
/// The flag that ends a side of a stream, on DATA and SYN frames.
const FIN: u8 = 0x01;
/// The most a DATA frame carries here: kubectl's own copy size.
pub const MAX_DATA: usize = 32 * 1024;

/// The SPDY/3 header dictionary (spec §2.6.10.1): each word with its 32-bit length, then
/// the status lines, dates and media types as one run. 1423 bytes.
fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,",
        "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

/// A frame read from the peer.
#[derive(Debug, PartialEq)]
pub enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    RstStream {
        id: u32,
    },
    /// The ping, as read: echoed back unchanged.
    Ping(Bytes),
    GoAway,
    Data {
        id: u32,
        fin: bool,
        data: Bytes,
    },
    /// SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY: nothing a port-forward server acts on.
    Ignored,
}

/// One connection's framing: the two header compression streams, and what came in that
/// is not a whole frame yet.
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
    dict: Vec<u8>,
    deflate_started: bool,
    buf: BytesMut,
}

impl Default for Codec {
    fn default() -> Codec {
        Codec {
            inflate: Decompress::new(true),
            deflate: Compress::new(Compression::best(), true),
            dict: dictionary(),
            deflate_started: false,
            buf: BytesMut::new(),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Codec {
    /// Takes bytes as they came (a frame may span reads, or a read hold several).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame fed, if any.
    pub fn next(&mut self) -> Result<Option<Frame>, String> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let len = (u32_at(&self.buf, 4) & 0x00ff_ffff) as usize;
        if self.buf.len() < 8 + len {
            return Ok(None);
        }
        let head = self.buf.split_to(8);
        let body = self.buf.split_to(len).freeze();
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                id: u32_at(&head, 0) & 0x7fff_ffff,
                fin: flags & FIN != 0,
                data: body,
            }));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let short = || format!("a SPDY control frame of type {kind} is too short");
        Ok(Some(match kind {
            1 => {
                if body.len() < 10 {
                    return Err(short());
                }
                let block = self.inflate(&body[10..])?;
                Frame::SynStream {
                    id: u32_at(&body, 0) & 0x7fff_ffff,
                    fin: flags & FIN != 0,
                    headers: name_values(&block)?,
                }
            }
            3 if body.len() >= 8 => Frame::RstStream {
                id: u32_at(&body, 0) & 0x7fff_ffff,
            },
            6 if body.len() >= 4 => Frame::Ping([&head[..], &body[..]].concat().into()),
            7 => Frame::GoAway,
            2 | 8 => {
                // Their header blocks still advance the shared decompression stream.
                if body.len() < 4 {
                    return Err(short());
                }
                self.inflate(&body[4..])?;
                Frame::Ignored
            }
            3 | 6 => return Err(short()),
            _ => Frame::Ignored,
        }))
    }

    /// A header block, decompressed on the connection's one stream.
    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        loop {
            let before = self.inflate.total_in();
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            match result {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dict)
                        .map_err(|e| format!("the SPDY header dictionary: {e}"))?;
                }
                Err(e) => return Err(format!("a SPDY header block does not inflate: {e}")),
                // Output full: there may be more; room left: all there is came out.
                Ok(_) if out.len() == out.capacity() => {}
                Ok(_) if input.is_empty() => return Ok(out),
                Ok(_) if used == 0 => {
                    return Err("a SPDY header block ends before its data".into());
                }
                Ok(_) => {}
            }
        }
    }

    /// A header block, compressed on the connection's one outgoing stream.
    fn deflate(&mut self, block: &[u8]) -> Result<Vec<u8>, String> {
        if !self.deflate_started {
            self.deflate
                .set_dictionary(&self.dict)
                .map_err(|e| format!("the SPDY header dictionary: {e}"))?;
            self.deflate_started = true;
        }
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut input = block;
        loop {
            let before = self.deflate.total_in();
            out.reserve(64);
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| format!("a SPDY header block does not deflate: {e}"))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done once all went in and the flush fit: room was left over.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// SYN_REPLY with no headers: what the kubelet answers a stream it accepts.
    pub fn syn_reply(&mut self, id: u32) -> Result<Vec<u8>, String> {
        let block = self.deflate(&0u32.to_be_bytes())?;
        let mut f = control(2, 0, 4 + block.len());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&block);
        Ok(f)
    }
}

fn control(kind: u16, flags: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0x80, 0x03];
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    f
}

/// RST_STREAM of stream `id` with `status`.
pub fn rst_stream(id: u32, status: u32) -> Vec<u8> {
    let mut f = control(3, 0, 8);
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&status.to_be_bytes());
    f
}

/// A DATA frame (at most [`MAX_DATA`] of payload is the caller's to keep to).
pub fn data(id: u32, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = id.to_be_bytes().to_vec();
    f.push(if fin { FIN } else { 0 });
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

/// A name/value block: a 32-bit count, then each name and value with a 32-bit length.
fn name_values(block: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut b = block;
    let bad = || "a malformed SPDY header block".to_string();
    let read = |b: &mut &[u8]| -> Result<String, String> {
        if b.len() < 4 {
            return Err(bad());
        }
        let n = b.get_u32() as usize;
        if b.len() < n {
            return Err(bad());
        }
        let s = String::from_utf8_lossy(&b[..n]).into_owned();
        b.advance(n);
        Ok(s)
    };
    if b.len() < 4 {
        return Err(bad());
    }
    let count = b.get_u32();
    let mut out = Vec::new();
    for _ in 0..count {
        let name = read(&mut b)?;
        let value = read(&mut b)?;
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_dictionary_is_spdy_3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        let (mut a, mut b) = (1u32, 0u32);
        for x in &d {
            a = (a + u32::from(*x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(b << 16 | a, 0xE3C6_A7C2, "adler32");
    }

    #[test]
    fn syn_streams_as_kubectl_sends_them_one_byte_at_a_time() {
        // Two SYN_STREAMs on one compression stream (made with zlib, level 9, the
        // dictionary and a sync flush), then a DATA frame with FIN.
        let mut wire = hex(
            "800300010000003c0000000100000000000078f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45a024cc64610024398b209198094adc8c0600000000ffff",
        );
        wire.extend(hex(
            "800300010000001800000003000000000000c2aa15540a2512d209000000ffff",
        ));
        wire.extend(data(3, true, b"GET /"));
        let mut codec = Codec::default();
        let mut frames = Vec::new();
        for byte in wire {
            codec.feed(&[byte]);
            while let Some(f) = codec.next().unwrap() {
                frames.push(f);
            }
        }
        let h = |kind: &str| {
            vec![
                ("streamtype".to_string(), kind.to_string()),
                ("port".to_string(), "80".to_string()),
                ("requestid".to_string(), "0".to_string()),
            ]
        };
        assert_eq!(
            frames,
            [
                Frame::SynStream {
                    id: 1,
                    fin: false,
                    headers: h("error")
                },
                Frame::SynStream {
                    id: 3,
                    fin: false,
                    headers: h("data")
                },
                Frame::Data {
                    id: 3,
                    fin: true,
                    data: Bytes::from_static(b"GET /")
                },
            ]
        );
    }

    #[test]
    fn replies_decode_on_one_stream_with_the_dictionary() {
        let mut server = Codec::default();
        let mut client = Codec::default();
        for id in [1, 3, 5] {
            let reply = server.syn_reply(id).unwrap();
            assert_eq!(&reply[..4], [0x80, 0x03, 0x00, 0x02]);
            // Read back as a SYN_STREAM-shaped block: the same inflater, in order.
            client.feed(&reply);
            assert_eq!(client.next().unwrap(), Some(Frame::Ignored));
        }
        assert!(client.buf.is_empty());
    }
}
