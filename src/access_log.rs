//! The access log: one line per data-plane request, cheap enough to leave on.
//!
//! The request path formats its line straight into a batch buffer (one of a few shards,
//! picked per thread, each behind its own rarely contended lock): no allocation, no
//! time-zone lookup (the date and time of day are rendered once per second and reused),
//! integers through `itoa`. A full batch (32 KiB, a few hundred lines) goes to a
//! dedicated writer thread through a bounded queue, so a line costs the request path well
//! under a microsecond and no system call. The writer also collects every shard at least
//! once a second, and on [`AccessLog::flush`] / [`AccessLog::stop`] (the server's
//! shutdown and the binary's [`Guard`]). When the queue is full (a slow or stuck disk)
//! the request path never waits: the line is dropped and counted
//! ([`AccessLog::dropped`], the `portcullis_access_log_dropped_total` metric).
//!
//! Lines have the fields the tracing-based log had (method, host, path, status,
//! duration_us, user, peer) in the same shapes: text as tracing-subscriber's default
//! formatter wrote them (without colour codes), or one JSON object per line.

use crate::clock::{Clock, Micros};
use crate::config::file::LogFormat;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::cell::Cell;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// One request as the access log records it.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration_us: u64,
    /// The signed-in user, when the request carried a valid token.
    pub user: Option<&'a str>,
    pub peer: &'a str,
}

/// What the log needs from a request before the pipeline consumes it: cheap clones
/// (the method is inline for standard methods; the Host value and the URI share the
/// bytes hyper read), no copies of strings.
#[derive(Debug)]
pub struct Pending {
    start: Instant,
    method: http::Method,
    host: Host,
    path: Option<http::uri::PathAndQuery>,
}

/// The Host header (HTTP/1), else the URI's authority (HTTP/2).
#[derive(Debug)]
enum Host {
    Header(http::HeaderValue),
    Authority(http::uri::Authority),
    None,
}

impl Pending {
    pub fn of<B>(req: &http::Request<B>) -> Self {
        let host = match (req.headers().get(http::header::HOST), req.uri().authority()) {
            (Some(h), _) => Host::Header(h.clone()),
            (None, Some(a)) => Host::Authority(a.clone()),
            (None, None) => Host::None,
        };
        Self {
            start: Instant::now(),
            method: req.method().clone(),
            host,
            path: req.uri().path_and_query().cloned(),
        }
    }

    /// The line for this request, answered with `status`, timed until now.
    pub fn line<'a>(
        &'a self,
        status: http::StatusCode,
        user: Option<&'a str>,
        peer: &'a str,
    ) -> Line<'a> {
        Line {
            method: self.method.as_str(),
            host: match &self.host {
                Host::Header(h) => h.to_str().unwrap_or(""),
                Host::Authority(a) => a.host(),
                Host::None => "",
            },
            path: self.path.as_ref().map_or("/", |p| p.path()),
            status: status.as_u16(),
            duration_us: self.start.elapsed().as_micros() as u64,
            user,
            peer,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) for one second, rendered when the second changes.
#[derive(Debug, Default)]
pub struct Stamp {
    sec: Option<i64>,
    text: String,
}

impl Stamp {
    fn get(&mut self, sec: i64) -> &[u8] {
        if self.sec != Some(sec) {
            // `2026-11-22T09:30:00.000Z`: keep what comes before the fraction.
            let full = crate::timefmt::format_rfc3339_millis(sec.saturating_mul(1_000_000));
            let end = full.rfind('.').unwrap_or(full.len());
            self.text.clear();
            self.text.push_str(&full[..end]);
            self.sec = Some(sec);
        }
        self.text.as_bytes()
    }
}

/// Appends `line`, stamped `now_us`, to `out` in `format`, newline included.
pub fn format_line(
    out: &mut Vec<u8>,
    stamp: &mut Stamp,
    line: &Line<'_>,
    now_us: Micros,
    format: LogFormat,
) {
    let sec = now_us.div_euclid(1_000_000);
    let micros = now_us.rem_euclid(1_000_000) as u32;
    let mut num = itoa::Buffer::new();
    match format {
        LogFormat::Text => {
            out.extend_from_slice(stamp.get(sec));
            push_micros(out, micros);
            out.extend_from_slice(b"Z  INFO portcullis::access: method=");
            text_value(out, line.method);
            out.extend_from_slice(b" host=");
            text_value(out, line.host);
            out.extend_from_slice(b" path=");
            text_value(out, line.path);
            out.extend_from_slice(b" status=");
            out.extend_from_slice(num.format(line.status).as_bytes());
            out.extend_from_slice(b" duration_us=");
            out.extend_from_slice(num.format(line.duration_us).as_bytes());
            out.extend_from_slice(b" user=");
            quoted(out, line.user.unwrap_or("-"));
            out.extend_from_slice(b" peer=");
            text_value(out, line.peer);
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            out.extend_from_slice(stamp.get(sec));
            push_micros(out, micros);
            out.extend_from_slice(b"Z\",\"level\":\"INFO\",\"method\":");
            json_str(out, line.method);
            out.extend_from_slice(b",\"host\":");
            json_str(out, line.host);
            out.extend_from_slice(b",\"path\":");
            json_str(out, line.path);
            out.extend_from_slice(b",\"status\":");
            out.extend_from_slice(num.format(line.status).as_bytes());
            out.extend_from_slice(b",\"duration_us\":");
            out.extend_from_slice(num.format(line.duration_us).as_bytes());
            out.extend_from_slice(b",\"user\":");
            json_str(out, line.user.unwrap_or("-"));
            out.extend_from_slice(b",\"peer\":");
            json_str(out, line.peer);
            out.extend_from_slice(b",\"target\":\"portcullis::access\"}");
        }
    }
    out.push(b'\n');
}

/// `.uuuuuu`: the fraction of the second, six digits.
fn push_micros(out: &mut Vec<u8>, micros: u32) {
    let mut d = [b'.', b'0', b'0', b'0', b'0', b'0', b'0'];
    let mut m = micros;
    for slot in d[1..].iter_mut().rev() {
        *slot = b'0' + (m % 10) as u8;
        m /= 10;
    }
    out.extend_from_slice(&d);
}

/// Per byte: 1 = escaped in quotes and in JSON (quote, backslash, control characters),
/// 2 = makes a text value need quotes (space), 0 = as is.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f {
            1
        } else if b == b' ' {
            2
        } else {
            0
        };
        i += 1;
    }
    t
};

/// Whether `v` has a byte of a class in `mask` (a table load per byte, no branch).
fn has_class(v: &str, mask: u8) -> bool {
    v.bytes().fold(0u8, |acc, b| acc | CLASS[b as usize]) & mask != 0
}

/// A text value as is when it cannot be mistaken for two fields, quoted otherwise.
fn text_value(out: &mut Vec<u8>, v: &str) {
    if v.is_empty() || has_class(v, 3) {
        quoted(out, v);
    } else {
        out.extend_from_slice(v.as_bytes());
    }
}

/// `"v"` with quotes, backslashes and control characters escaped (as Rust's `{:?}`).
fn quoted(out: &mut Vec<u8>, v: &str) {
    escaped(out, v, |out, b| {
        let _ = write!(out, "\\u{{{b:x}}}");
    });
}

/// A JSON string literal.
fn json_str(out: &mut Vec<u8>, v: &str) {
    escaped(out, v, |out, b| {
        let _ = write!(out, "\\u{b:04x}");
    });
}

/// `"v"` with `"`, `\`, `\n`, `\r`, `\t` escaped and other control characters written
/// by `control` (the one place the text and JSON shapes differ).
fn escaped(out: &mut Vec<u8>, v: &str, control: impl Fn(&mut Vec<u8>, u8)) {
    out.push(b'"');
    if !has_class(v, 1) {
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
        return;
    }
    let mut from = 0;
    for (i, b) in v.bytes().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&v.as_bytes()[from..i]);
        if esc.is_empty() {
            control(out, b);
        } else {
            out.extend_from_slice(esc);
        }
        from = i + 1;
    }
    out.extend_from_slice(&v.as_bytes()[from..]);
    out.push(b'"');
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    /// Appended to; created when missing.
    File(PathBuf),
}

/// How the log batches and when it gives up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub format: LogFormat,
    /// A shard's batch goes to the writer once it holds this many bytes.
    pub batch_bytes: usize,
    /// Full batches the queue holds before lines are dropped.
    pub queue_batches: usize,
    /// The writer collects every shard at least this often.
    pub flush_every: Duration,
    /// How long `flush` and `stop` wait for the writer.
    pub flush_timeout: Duration,
}

impl Settings {
    pub fn new(format: LogFormat) -> Self {
        Self {
            format,
            batch_bytes: 32 * 1024,
            queue_batches: 64,
            flush_every: Duration::from_secs(1),
            flush_timeout: Duration::from_secs(5),
        }
    }
}

/// Batch buffers kept per shard; with a full queue a shard keeps filling up to this many
/// batches' worth before it drops lines.
const SHARD_BATCHES: usize = 4;
const SHARDS: usize = 8;

struct Shard {
    buf: Vec<u8>,
    lines: u64,
    stamp: Stamp,
}

/// Keeps each shard's lock on its own cache line.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

enum Msg {
    Batch(Vec<u8>, u64),
    /// Collect every shard, write, and answer.
    Flush(Sender<()>),
    Stop(Sender<()>),
}

struct Shared {
    format: LogFormat,
    batch_bytes: usize,
    clock: Arc<dyn Clock>,
    shards: Box<[Padded]>,
    queue: Sender<Msg>,
    /// Written buffers coming back for reuse.
    spare: Receiver<Vec<u8>>,
    dropped: AtomicU64,
    stopped: AtomicBool,
}

/// The access log: formatter, shards and the writer thread behind them.
pub struct AccessLog {
    shared: Arc<Shared>,
    flush_timeout: Duration,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static SHARD: Cell<usize> = Cell::new(NEXT_SHARD.fetch_add(1, Ordering::Relaxed));
}

impl AccessLog {
    /// Opens `dest` and starts the writer thread.
    pub fn start(
        settings: Settings,
        dest: &Destination,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let sink: Box<dyn Write + Send> = match dest {
            Destination::Stderr => Box::new(std::io::stderr()),
            Destination::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        Self::with_sink(settings, sink, clock)
    }

    /// Starts the writer thread on any sink (each batch is one `write_all`).
    pub fn with_sink(
        settings: Settings,
        sink: Box<dyn Write + Send>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let (queue, rx) = crossbeam_channel::bounded(settings.queue_batches.max(1));
        let (give_back, spare) = crossbeam_channel::bounded(settings.queue_batches.max(1));
        let shards = (0..SHARDS)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    buf: Vec::new(),
                    lines: 0,
                    stamp: Stamp::default(),
                }))
            })
            .collect();
        let shared = Arc::new(Shared {
            format: settings.format,
            batch_bytes: settings.batch_bytes.max(1),
            clock,
            shards,
            queue,
            spare,
            dropped: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let writer = Writer {
            shared: shared.clone(),
            rx,
            give_back,
            sink,
            every: settings.flush_every,
            last_error: None,
        };
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())?;
        Ok(Self {
            shared,
            flush_timeout: settings.flush_timeout,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Formats `line` into this thread's shard; never blocks on the writer.
    pub fn record(&self, line: &Line<'_>) {
        let s = &*self.shared;
        if s.stopped.load(Ordering::Relaxed) {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = s.clock.now_us();
        let i = SHARD.with(Cell::get) % s.shards.len();
        let mut shard = lock(&s.shards[i].0);
        if shard.buf.len() >= s.batch_bytes * SHARD_BATCHES {
            drop(shard);
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let shard = &mut *shard;
        if shard.buf.capacity() == 0 {
            shard.buf = s.fresh_buffer();
        }
        format_line(&mut shard.buf, &mut shard.stamp, line, now, s.format);
        shard.lines += 1;
        if shard.buf.len() >= s.batch_bytes {
            s.hand_off(shard);
        }
    }

    /// Lines dropped so far (queue full, write failed, or recorded after `stop`).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Writes every line recorded before the call; waits at most the flush timeout.
    /// Returns whether the writer confirmed. Blocks the calling thread.
    pub fn flush(&self) -> bool {
        self.ask(Msg::Flush)
    }

    /// Flushes and ends the writer thread; later lines are dropped. Idempotent.
    pub fn stop(&self) {
        let Some(handle) = lock(&self.writer).take() else {
            return;
        };
        self.shared.stopped.store(true, Ordering::Relaxed);
        if self.ask(Msg::Stop) {
            let _ = handle.join();
        }
    }

    fn ask(&self, msg: fn(Sender<()>) -> Msg) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let deadline = Instant::now() + self.flush_timeout;
        if self.shared.queue.send_deadline(msg(tx), deadline).is_err() {
            return false;
        }
        rx.recv_deadline(deadline).is_ok()
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn fresh_buffer(&self) -> Vec<u8> {
        self.spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.batch_bytes + 1024))
    }

    /// Sends the shard's batch to the writer; with the queue full the shard keeps it.
    fn hand_off(&self, shard: &mut Shard) {
        let full = std::mem::take(&mut shard.buf);
        let lines = std::mem::take(&mut shard.lines);
        match self.queue.try_send(Msg::Batch(full, lines)) {
            Ok(()) => shard.buf = self.fresh_buffer(),
            Err(TrySendError::Full(Msg::Batch(full, lines)))
            | Err(TrySendError::Disconnected(Msg::Batch(full, lines))) => {
                shard.buf = full;
                shard.lines = lines;
            }
            Err(_) => {}
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    give_back: Sender<Vec<u8>>,
    sink: Box<dyn Write + Send>,
    every: Duration,
    last_error: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
        let mut last = Instant::now();
        loop {
            let wait = self.every.saturating_sub(last.elapsed());
            match self.rx.recv_timeout(wait) {
                Ok(Msg::Batch(buf, lines)) => self.write(buf, lines),
                Ok(Msg::Flush(ack)) => {
                    self.collect();
                    last = Instant::now();
                    let _ = ack.send(());
                }
                Ok(Msg::Stop(ack)) => {
                    while let Ok(Msg::Batch(buf, lines)) = self.rx.try_recv() {
                        self.write(buf, lines);
                    }
                    self.collect();
                    let _ = ack.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.collect();
                    return;
                }
            }
            if last.elapsed() >= self.every {
                self.collect();
                last = Instant::now();
            }
        }
    }

    /// Takes what every shard holds and writes it.
    fn collect(&mut self) {
        for i in 0..self.shared.shards.len() {
            let taken = {
                let mut shard = lock(&self.shared.shards[i].0);
                if shard.buf.is_empty() {
                    continue;
                }
                // The shard takes a spare buffer when it next records a line.
                let lines = std::mem::take(&mut shard.lines);
                (std::mem::take(&mut shard.buf), lines)
            };
            self.write(taken.0, taken.1);
        }
        let _ = self.sink.flush();
    }

    fn write(&mut self, mut buf: Vec<u8>, lines: u64) {
        if let Err(e) = self.sink.write_all(&buf) {
            self.shared.dropped.fetch_add(lines, Ordering::Relaxed);
            // Say so at most once a minute (the normal log may go elsewhere).
            if self
                .last_error
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
            {
                self.last_error = Some(Instant::now());
                tracing::error!(error = %e, lines, "cannot write the access log; lines dropped");
            }
        }
        buf.clear();
        let _ = self.give_back.try_send(buf);
    }
}

static GLOBAL: OnceLock<AccessLog> = OnceLock::new();

/// Makes `log` the process's access log (the data plane records into it). Fails, handing
/// the log back, when one is installed already.
pub fn install(log: AccessLog) -> Result<Guard, AccessLog> {
    GLOBAL.set(log).map(|()| Guard(()))
}

/// Records into the installed access log; nothing without one.
pub fn record(line: &Line<'_>) {
    if let Some(log) = GLOBAL.get() {
        log.record(line);
    }
}

/// Flushes the installed access log (the server's shutdown calls it).
pub fn flush() {
    if let Some(log) = GLOBAL.get() {
        log.flush();
    }
}

/// Lines the installed access log dropped (0 without one).
pub fn dropped_total() -> u64 {
    GLOBAL.get().map_or(0, AccessLog::dropped)
}

/// Stops the installed access log when dropped: its lines are written before the process
/// exits.
#[must_use = "the access log stops when the guard is dropped"]
pub struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(log) = GLOBAL.get() {
            log.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    // 2026-11-22T09:30:00.123456Z
    const T: Micros = 1_795_339_800_123_456;

    fn line() -> Line<'static> {
        Line {
            method: "GET",
            host: "echo.localhost",
            path: "/a/b",
            status: 200,
            duration_us: 85,
            user: Some("demo@example.com"),
            peer: "127.0.0.1",
        }
    }

    fn fmt(l: &Line<'_>, now: Micros, f: LogFormat) -> String {
        let mut out = Vec::new();
        format_line(&mut out, &mut Stamp::default(), l, now, f);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_line_has_tracings_shape_without_colour() {
        assert_eq!(
            fmt(&line(), T, LogFormat::Text),
            "2026-11-22T09:30:00.123456Z  INFO portcullis::access: method=GET host=echo.localhost \
             path=/a/b status=200 duration_us=85 user=\"demo@example.com\" peer=127.0.0.1\n"
        );
        let anon = Line {
            user: None,
            host: "",
            status: 401,
            ..line()
        };
        let s = fmt(&anon, 1_000_000, LogFormat::Text);
        assert!(s.starts_with("1970-01-01T00:00:01.000000Z  INFO "), "{s}");
        assert!(s.contains(" host=\"\" path=/a/b status=401 "), "{s}");
        assert!(s.ends_with(" user=\"-\" peer=127.0.0.1\n"), "{s}");
        assert!(!s.contains('\x1b'));
    }

    #[test]
    fn text_values_that_could_forge_fields_are_quoted() {
        let l = Line {
            host: "a b\"c\\d",
            user: Some("x\" peer=6.6.6.6\n"),
            ..line()
        };
        let s = fmt(&l, T, LogFormat::Text);
        assert!(s.contains(r#" host="a b\"c\\d" "#), "{s}");
        assert!(
            s.contains(r#" user="x\" peer=6.6.6.6\n" peer=127.0.0.1"#),
            "{s}"
        );
        assert_eq!(s.matches('\n').count(), 1);
        let ctl = fmt(
            &Line {
                host: "a\x01b\x7f",
                ..line()
            },
            T,
            LogFormat::Text,
        );
        assert!(ctl.contains(r#" host="a\u{1}b\u{7f}" "#), "{ctl}");
    }

    #[test]
    fn json_line_parses_with_the_same_fields() {
        let l = Line {
            path: "/q\"\\\u{1}é",
            ..line()
        };
        let s = fmt(&l, T, LogFormat::Json);
        assert!(s.ends_with('\n') && s.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "timestamp": "2026-11-22T09:30:00.123456Z", "level": "INFO",
                "method": "GET", "host": "echo.localhost", "path": "/q\"\\\u{1}é",
                "status": 200, "duration_us": 85, "user": "demo@example.com",
                "peer": "127.0.0.1", "target": "portcullis::access",
            })
        );
        let anon = fmt(
            &Line {
                user: None,
                ..line()
            },
            T,
            LogFormat::Json,
        );
        let v: serde_json::Value = serde_json::from_str(&anon).unwrap();
        assert_eq!(v["user"], "-");
    }

    #[test]
    fn the_stamp_is_rendered_once_per_second_and_follows_the_clock() {
        let mut st = Stamp::default();
        let mut out = Vec::new();
        for now in [
            T,
            T + 1,
            T + 876_543,
            T + 876_544 + 5_000_000,
            T - 86_400_000_000,
        ] {
            out.clear();
            format_line(&mut out, &mut st, &line(), now, LogFormat::Text);
            let got = String::from_utf8(out.clone()).unwrap();
            let want = crate::timefmt::format_rfc3339_millis(now);
            // Same second and millisecond as the audit log's formatter, six digits.
            assert_eq!(&got[..23], &want[..23], "{got}");
            assert_eq!(
                &got[23..27],
                &format!("{:03}Z", now.rem_euclid(1000)),
                "{got}"
            );
        }
    }

    #[test]
    fn pending_captures_the_request_before_it_is_consumed() {
        let req = http::Request::builder()
            .method("PATCH")
            .uri("/p/q?secret=1")
            .header("host", "App.localhost:8443")
            .body(())
            .unwrap();
        let p = Pending::of(&req);
        drop(req);
        let l = p.line(http::StatusCode::FORBIDDEN, Some("u@x"), "::1");
        assert_eq!(
            (l.method, l.host, l.path, l.status, l.user, l.peer),
            (
                "PATCH",
                "App.localhost:8443",
                "/p/q",
                403,
                Some("u@x"),
                "::1"
            )
        );
        // HTTP/2: the authority instead of a Host header.
        let h2 = http::Request::builder()
            .uri("https://h2.localhost/x")
            .body(())
            .unwrap();
        assert_eq!(
            Pending::of(&h2).line(http::StatusCode::OK, None, "p").host,
            "h2.localhost"
        );
    }

    /// A sink that keeps each write (one per batch) and can be held shut.
    #[derive(Clone, Default)]
    struct Writes {
        got: Arc<Mutex<Vec<Vec<u8>>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Writes {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _held = lock(&self.gate);
            lock(&self.got).push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Writes {
        fn lines(&self) -> Vec<String> {
            let all: Vec<u8> = lock(&self.got).concat();
            String::from_utf8(all)
                .unwrap()
                .lines()
                .map(String::from)
                .collect()
        }
        fn writes(&self) -> usize {
            lock(&self.got).len()
        }
    }

    fn settings(batch: usize, queue: usize, every: Duration) -> Settings {
        Settings {
            batch_bytes: batch,
            queue_batches: queue,
            flush_every: every,
            flush_timeout: Duration::from_secs(5),
            ..Settings::new(LogFormat::Text)
        }
    }

    fn numbered(i: usize) -> String {
        format!("/n/{i}")
    }

    #[test]
    fn full_batches_go_out_in_one_write_each_and_stop_flushes_the_rest() {
        let w = Writes::default();
        let clock = ManualClock::new(T);
        let log = AccessLog::with_sink(
            settings(4096, 64, Duration::from_secs(3600)),
            Box::new(w.clone()),
            clock,
        )
        .unwrap();
        let paths: Vec<String> = (0..1000).map(numbered).collect();
        for p in &paths {
            log.record(&Line { path: p, ..line() });
        }
        // A line is ~150 bytes: ~27 lines per 4 KiB batch, all but the last sent whole.
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.writes() < 30 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let batches = w.writes();
        assert!((30..=40).contains(&batches), "{batches} writes");
        assert!(w.lines().len() < 1000, "the last partial batch waits");
        log.stop();
        let lines = w.lines();
        assert_eq!(lines.len(), 1000);
        // This thread's lines stay in order.
        for (i, l) in lines.iter().enumerate() {
            assert!(l.contains(&format!(" path=/n/{i} ")), "{l}");
        }
        assert_eq!(log.dropped(), 0);
        // After stop: dropped and counted, never written.
        log.record(&line());
        assert_eq!(log.dropped(), 1);
        assert_eq!(w.lines().len(), 1000);
    }

    #[test]
    fn flush_writes_what_was_recorded_and_the_writer_collects_every_second() {
        let w = Writes::default();
        let log = AccessLog::with_sink(
            settings(1 << 20, 4, Duration::from_millis(200)),
            Box::new(w.clone()),
            ManualClock::new(T),
        )
        .unwrap();
        log.record(&line());
        assert!(log.flush());
        assert_eq!(w.lines().len(), 1);
        // From another thread (another shard), no flush: the periodic collection.
        std::thread::scope(|s| {
            s.spawn(|| {
                log.record(&Line {
                    path: "/other",
                    ..line()
                })
            });
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.lines().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(w.lines()[1].contains(" path=/other "));
    }

    #[test]
    fn a_stuck_writer_makes_lines_drop_and_count_never_block() {
        let w = Writes::default();
        let log = AccessLog::with_sink(
            Settings {
                flush_timeout: Duration::from_millis(100),
                ..settings(1024, 2, Duration::from_secs(3600))
            },
            Box::new(w.clone()),
            ManualClock::new(T),
        )
        .unwrap();
        let held = lock(&w.gate);
        // Capacity while stuck: the batch in the writer's hands, 2 queued, and the
        // shard's 4 KiB: about 7 KiB of ~150-byte lines. The rest is dropped.
        let t0 = Instant::now();
        let paths: Vec<String> = (0..2000).map(numbered).collect();
        for p in &paths {
            log.record(&Line { path: p, ..line() });
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "recording never waits"
        );
        let dropped = log.dropped();
        assert!((1900..2000).contains(&dropped), "{dropped} dropped");
        assert!(!log.flush(), "flush gives up on a stuck writer");
        drop(held);
        assert!(log.flush());
        let written = w.lines();
        assert_eq!(written.len() as u64 + dropped, 2000);
        assert!(written[0].contains(" path=/n/0 "));
        // Once the disk is back, lines flow again.
        log.record(&Line {
            path: "/later",
            ..line()
        });
        assert!(log.flush());
        assert!(w.lines().last().unwrap().contains(" path=/later "));
        assert_eq!(log.dropped(), dropped);
    }

    #[test]
    fn many_threads_lose_no_line_when_the_queue_has_room() {
        let w = Writes::default();
        // Room for every line even if the writer gets no CPU until `stop`.
        let log = AccessLog::with_sink(
            settings(2048, 1024, Duration::from_millis(50)),
            Box::new(w.clone()),
            ManualClock::new(T),
        )
        .unwrap();
        std::thread::scope(|s| {
            for t in 0..12 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..500 {
                        let p = format!("/t{t}/{i}");
                        log.record(&Line { path: &p, ..line() });
                    }
                });
            }
        });
        log.stop();
        let lines = w.lines();
        assert_eq!(log.dropped(), 0);
        assert_eq!(lines.len(), 6000);
        let mut seen: Vec<&str> = lines
            .iter()
            .map(|l| l.split(" path=").nth(1).unwrap().split(' ').next().unwrap())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 6000);
    }

    #[test]
    fn a_file_destination_is_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "earlier\n").unwrap();
        let log = AccessLog::start(
            Settings::new(LogFormat::Json),
            &Destination::File(path.clone()),
            ManualClock::new(T),
        )
        .unwrap();
        log.record(&line());
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("earlier"));
        let v: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(lines.next(), None);
    }
}
