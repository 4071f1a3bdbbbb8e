//! The HTTP/1 request-framing guard (`proxy::framing_guard`), fed the raw bytes of a
//! client connection.
//!
//! Input: two bytes that choose the head limit and the read sizes, then the stream.
//! Checked: the guard passes every byte through unchanged, and its verdict (the flag)
//! does not depend on how the stream is cut into reads: all at once, in the chosen
//! sizes, and one byte at a time agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proxy::framing_guard::FramingGuard;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, ReadBuf};

/// Returns the given pieces, one per read.
struct Pieces(VecDeque<Vec<u8>>);

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(mut p) = self.0.pop_front() {
            let n = p.len().min(buf.remaining());
            buf.put_slice(&p[..n]);
            if n < p.len() {
                self.0.push_front(p.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Reads everything through a guard; returns the flag.
fn run(pieces: Vec<Vec<u8>>, max_head: usize, want: &[u8]) -> bool {
    let (mut guard, flag) = FramingGuard::new(Pieces(pieces.into()), max_head);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut space = vec![0u8; 8192];
    loop {
        let mut rb = ReadBuf::new(&mut space);
        match Pin::new(&mut guard).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => break,
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(out, want, "bytes changed on the way through");
    flag.is_set()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (ctl, stream) = (data[0], &data[2..]);
    let max_head = if ctl & 0x80 != 0 {
        64 + usize::from(data[1]) * 16
    } else {
        64 * 1024
    };
    let whole = run(vec![stream.to_vec()], max_head, stream);
    // Read sizes from a small generator seeded by the control bytes.
    let mut seed = u32::from(data[0]) << 8 | u32::from(data[1]) | 1;
    let mut pieces = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = 1 + (seed as usize % 97).min(rest.len() - 1);
        pieces.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    assert_eq!(run(pieces, max_head, stream), whole, "split reads disagree");
    if stream.len() <= 4096 {
        let bytes = stream.iter().map(|b| vec![*b]).collect();
        assert_eq!(
            run(bytes, max_head, stream),
            whole,
            "byte-wise reads disagree"
        );
    }
});
