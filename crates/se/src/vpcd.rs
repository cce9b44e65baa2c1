//! The card side of vpcd (vsmartcard's virtual reader driver for pcscd): connects a
//! [`CardDevice`] to vpcd over TCP so that every PC/SC program sees it as a card in the reader
//! `Virtual PCD 00 00`.
//!
//! The card is the TCP client (vpcd listens on 35963 for reader 0, 35964 for reader 1); vpcd's
//! "reversed" mode, where the card listens, is not supported: Debian's build aborts pcscd when
//! the card is absent. Connecting inserts the card, closing the connection removes it.
//!
//! Wire protocol, both directions: a 2-byte big-endian length, then that many bytes. From vpcd,
//! one-byte frames are control messages — `00` power off, `01` power on, `02` reset, `04` get
//! ATR — of which only `04` is answered (one frame holding the ATR). Every longer frame is a
//! C-APDU exactly as the PC/SC application sent it, answered by one frame holding the complete
//! R-APDU (vpcd reports T=1 and does no `61xx` handling). pcscd polls `04` about every 0.4 s,
//! powered or not, and must be answered at once.
//!
//! The loop never panics on what vpcd sends: a malformed frame (length 0, or a connection that
//! ends or stalls inside a frame) is reported, the connection dropped (the card is removed and
//! loses its volatile state) and re-established with backoff.

use crate::device::CardDevice;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Default vpcd port of the first virtual reader (`Virtual PCD 00 00`).
pub const DEFAULT_PORT: u16 = 35963;

/// Control bytes from vpcd (vsmartcard `vpcd.h`).
const CTRL_OFF: u8 = 0x00;
const CTRL_ON: u8 = 0x01;
const CTRL_RESET: u8 = 0x02;
const CTRL_ATR: u8 = 0x04;

/// How [`run`] connects, waits and reconnects.
#[derive(Debug, Clone)]
pub struct VpcdOptions {
    /// Reconnect when vpcd is not there yet, goes away, or sends a malformed frame. When false,
    /// the first such event ends [`run`] with its error.
    pub reconnect: bool,
    /// First wait before reconnecting; doubled after each failed attempt up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Give up after this many failed connection attempts in a row (`None`: never). A
    /// successful connection resets the count.
    pub max_connect_attempts: Option<u32>,
    /// Timeout of one TCP connect attempt.
    pub connect_timeout: Duration,
    /// How often the loop looks at `stop` while waiting for vpcd.
    pub poll_interval: Duration,
    /// Once the first byte of a frame has arrived, the rest must follow within this time, or
    /// the frame counts as truncated.
    pub frame_timeout: Duration,
}

impl Default for VpcdOptions {
    fn default() -> Self {
        VpcdOptions {
            reconnect: true,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            max_connect_attempts: None,
            connect_timeout: Duration::from_secs(2),
            poll_interval: Duration::from_millis(50),
            frame_timeout: Duration::from_secs(5),
        }
    }
}

/// Errors of the vpcd connection.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VpcdError {
    #[error("vpcd address {addr:?} is not valid: {reason}")]
    Address { addr: String, reason: String },
    #[error("cannot connect to vpcd at {addr} after {attempts} attempt(s): {source}")]
    Connect { addr: String, attempts: u32, source: io::Error },
    #[error("vpcd closed the connection")]
    Closed,
    #[error("vpcd sent a frame of length 0")]
    EmptyFrame,
    #[error("vpcd frame truncated: {got} of {expected} bytes arrived")]
    Truncated { expected: usize, got: usize },
    #[error("vpcd connection: {0}")]
    Io(#[from] io::Error),
    #[error("saving the card state after an APDU failed: {0}")]
    Persist(String),
}

impl VpcdError {
    pub fn code(&self) -> &'static str {
        match self {
            VpcdError::Address { .. } => "vpcd.address",
            VpcdError::Connect { .. } => "vpcd.connect",
            VpcdError::Closed => "vpcd.closed",
            VpcdError::EmptyFrame => "vpcd.empty_frame",
            VpcdError::Truncated { .. } => "vpcd.truncated",
            VpcdError::Io(_) => "vpcd.io",
            VpcdError::Persist(_) => "vpcd.persist",
        }
    }
}

/// What happened on the connection, for logs. APDU events carry the command and the response:
/// a logger must not print their data fields, which may hold (wrapped) key material.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    Connected { peer: SocketAddr },
    /// A connection attempt failed; the next one follows after `retry_in`.
    ConnectFailed { attempt: u32, error: &'a io::Error, retry_in: Duration },
    /// The connection ended (the card is removed); `error` says why.
    Disconnected { error: &'a VpcdError },
    PowerOn,
    PowerOff,
    Reset,
    /// A one-byte frame that is not a known control message (ignored).
    UnknownControl(u8),
    Apdu { command: &'a [u8], response: &'a [u8], elapsed: Duration },
}

/// Hooks into [`run_with`]: persistence after APDUs, and logging.
pub trait VpcdHooks<D: ?Sized> {
    /// Called after every APDU the device processed, before the response goes back to vpcd
    /// (like a card that writes its NVM before answering). The implementation decides whether
    /// the APDU changed persistent state and saves it. An error ends [`run_with`] without
    /// answering: the host sees the card disappear instead of believing a change that was not
    /// kept.
    fn after_apdu(&mut self, _device: &mut D, _command: &[u8], _response: &[u8]) -> Result<(), String> {
        Ok(())
    }
    /// Called for every event; the default writes connection events and errors to stderr
    /// (not APDUs).
    fn event(&mut self, event: &Event<'_>) {
        if let Some(line) = default_log_line(event) {
            eprintln!("{line}");
        }
    }
}

/// The hooks of [`run`]: no persistence, connection events on stderr.
#[derive(Debug, Default, Clone, Copy)]
pub struct StderrLog;

impl<D: ?Sized> VpcdHooks<D> for StderrLog {}

/// The log line of a connection event (`None` for APDUs and power events, which are frequent).
pub fn default_log_line(event: &Event<'_>) -> Option<String> {
    match event {
        Event::Connected { peer } => Some(format!("vpcd: connected to {peer} (card inserted)")),
        Event::ConnectFailed { attempt, error, retry_in } => {
            // Only the first failure and then every tenth: vpcd being absent for a while is normal.
            (*attempt == 1 || attempt % 10 == 0)
                .then(|| format!("vpcd: connect attempt {attempt} failed ({error}); retrying in {retry_in:?}"))
        }
        Event::Disconnected { error } => Some(format!("vpcd: disconnected (card removed): {error}")),
        Event::UnknownControl(b) => Some(format!("vpcd: ignoring unknown control byte {b:02X}")),
        _ => None,
    }
}

/// One line describing an APDU exchange without its data fields: header, Lc/Le lengths,
/// response length and status word. Safe to log (no key material).
pub fn describe_apdu(command: &[u8], response: &[u8], elapsed: Duration) -> String {
    let mut s = String::new();
    if command.len() >= 4 {
        s.push_str(&format!("{:02X} {:02X} {:02X} {:02X}", command[0], command[1], command[2], command[3]));
        let body = command.len() - 4;
        if body > 0 {
            s.push_str(&format!(" +{body}B"));
        }
    } else {
        s.push_str(&format!("({} bytes)", command.len()));
    }
    let (data, sw) = if response.len() >= 2 {
        (response.len() - 2, format!("{:02X}{:02X}", response[response.len() - 2], response[response.len() - 1]))
    } else {
        (0, "----".into())
    };
    s.push_str(&format!(" -> {sw}"));
    if data > 0 {
        s.push_str(&format!(" {data}B"));
    }
    s.push_str(&format!(" {:.1} ms", elapsed.as_secs_f64() * 1000.0));
    s
}

/// Connects `device` to vpcd at `addr` (`host:port`) and serves it until `stop` is set (then
/// `Ok`), or until an error that `opts` does not retry. Connection events go to stderr.
pub fn run(device: &mut dyn CardDevice, addr: &str, opts: VpcdOptions, stop: &AtomicBool) -> Result<(), VpcdError> {
    run_with(device, addr, opts, stop, &mut StderrLog)
}

/// [`run`] with hooks: persistence after APDUs (see [`VpcdHooks::after_apdu`]) and logging.
pub fn run_with<D, H>(device: &mut D, addr: &str, opts: VpcdOptions, stop: &AtomicBool, hooks: &mut H) -> Result<(), VpcdError>
where
    D: CardDevice + ?Sized,
    H: VpcdHooks<D> + ?Sized,
{
    let targets = resolve(addr)?;
    let mut attempts: u32 = 0;
    let mut backoff = opts.backoff_initial;
    while !stop.load(Ordering::SeqCst) {
        match connect(&targets, opts.connect_timeout) {
            Ok(stream) => {
                attempts = 0;
                backoff = opts.backoff_initial;
                let peer = stream.peer_addr().unwrap_or(targets[0]);
                hooks.event(&Event::Connected { peer });
                let result = serve(device, stream, &opts, stop, hooks);
                // The connection is gone: the card left the reader and loses its volatile state.
                device.power_off();
                match result {
                    Ok(()) => return Ok(()), // stopped
                    Err(e @ VpcdError::Persist(_)) => {
                        hooks.event(&Event::Disconnected { error: &e });
                        return Err(e);
                    }
                    Err(e) => {
                        hooks.event(&Event::Disconnected { error: &e });
                        if !opts.reconnect {
                            return Err(e);
                        }
                    }
                }
                // vpcd went away (or misbehaved): pause briefly, it may be restarting.
                sleep_unless_stopped(opts.backoff_initial, opts.poll_interval, stop);
            }
            Err(error) => {
                attempts += 1;
                let give_up = !opts.reconnect || opts.max_connect_attempts.is_some_and(|max| attempts >= max);
                if give_up {
                    return Err(VpcdError::Connect { addr: addr.to_string(), attempts, source: error });
                }
                hooks.event(&Event::ConnectFailed { attempt: attempts, error: &error, retry_in: backoff });
                sleep_unless_stopped(backoff, opts.poll_interval, stop);
                backoff = (backoff * 2).min(opts.backoff_max.max(opts.backoff_initial));
            }
        }
    }
    Ok(())
}

fn resolve(addr: &str) -> Result<Vec<SocketAddr>, VpcdError> {
    let list: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| VpcdError::Address { addr: addr.to_string(), reason: e.to_string() })?
        .collect();
    if list.is_empty() {
        return Err(VpcdError::Address { addr: addr.to_string(), reason: "resolves to no address".into() });
    }
    Ok(list)
}

fn connect(targets: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for t in targets {
        match TcpStream::connect_timeout(t, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn sleep_unless_stopped(total: Duration, slice: Duration, stop: &AtomicBool) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(slice.max(Duration::from_millis(1))));
    }
}

/// Serves one connection. `Ok(())` only when stopped.
fn serve<D, H>(device: &mut D, mut stream: TcpStream, opts: &VpcdOptions, stop: &AtomicBool, hooks: &mut H) -> Result<(), VpcdError>
where
    D: CardDevice + ?Sized,
    H: VpcdHooks<D> + ?Sized,
{
    // Frames are tiny and latency matters (ATR polls, APDU round trips).
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(opts.poll_interval.max(Duration::from_millis(1))))?;
    stream.set_write_timeout(Some(opts.frame_timeout))?;
    loop {
        let Some(frame) = read_frame(&mut stream, opts.frame_timeout, stop)? else {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return Ok(());
        };
        match frame.as_slice() {
            [CTRL_OFF] => {
                device.power_off();
                hooks.event(&Event::PowerOff);
            }
            [CTRL_ON] => {
                device.power_on();
                hooks.event(&Event::PowerOn);
            }
            [CTRL_RESET] => {
                device.reset();
                hooks.event(&Event::Reset);
            }
            [CTRL_ATR] => write_frame(&mut stream, &device.atr())?,
            [other] => hooks.event(&Event::UnknownControl(*other)),
            command => {
                let started = Instant::now();
                let mut response = device.transmit(command);
                if response.len() > usize::from(u16::MAX) {
                    // Cannot be framed; a card cannot send more than 65536 + 2 bytes anyway.
                    response = vec![0x6F, 0x00];
                }
                hooks.after_apdu(device, command, &response).map_err(VpcdError::Persist)?;
                hooks.event(&Event::Apdu { command, response: &response, elapsed: started.elapsed() });
                write_frame(&mut stream, &response)?;
            }
        }
    }
}

fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> Result<(), VpcdError> {
    let len = u16::try_from(payload.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
    let mut buf = Vec::with_capacity(payload.len() + 2);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    stream.write_all(&buf)?;
    Ok(())
}

/// Reads one frame. `Ok(None)` when `stop` was set while no frame was in progress.
fn read_frame(stream: &mut TcpStream, frame_timeout: Duration, stop: &AtomicBool) -> Result<Option<Vec<u8>>, VpcdError> {
    let mut header = [0u8; 2];
    let mut got = 0;
    let mut deadline: Option<Instant> = None;
    while got < 2 {
        if got == 0 && stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        match read_some(stream, &mut header[got..])? {
            Some(0) if got == 0 => return Err(VpcdError::Closed),
            Some(0) => return Err(VpcdError::Truncated { expected: 2, got }),
            Some(n) => {
                got += n;
                deadline.get_or_insert_with(|| Instant::now() + frame_timeout);
            }
            None => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(VpcdError::Truncated { expected: 2, got });
                }
            }
        }
    }
    let len = usize::from(u16::from_be_bytes(header));
    if len == 0 {
        return Err(VpcdError::EmptyFrame);
    }
    let deadline = deadline.unwrap_or_else(|| Instant::now() + frame_timeout);
    let mut payload = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match read_some(stream, &mut payload[got..])? {
            Some(0) => return Err(VpcdError::Truncated { expected: len, got }),
            Some(n) => got += n,
            None => {
                if Instant::now() >= deadline || stop.load(Ordering::SeqCst) {
                    return Err(VpcdError::Truncated { expected: len, got });
                }
            }
        }
    }
    Ok(Some(payload))
}

/// One read; `None` when the read timed out (the poll interval), so the caller can look at
/// `stop` and its deadline.
fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> Result<Option<usize>, VpcdError> {
    match stream.read(buf) {
        Ok(n) => Ok(Some(n)),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// A device that records what reached it and answers APDUs with `INS ‖ 9000`, or with
    /// `6D00` when nothing is "selected" after a reset (so tests see resets take effect).
    struct Probe {
        log: Arc<Mutex<Vec<String>>>,
        selected: bool,
    }

    impl Probe {
        fn new() -> (Self, Arc<Mutex<Vec<String>>>) {
            let log = Arc::new(Mutex::new(Vec::new()));
            (Probe { log: log.clone(), selected: false }, log)
        }
    }

    const ATR: [u8; 6] = [0x3B, 0x81, 0x80, 0x01, 0x42, 0x42];

    impl CardDevice for Probe {
        fn atr(&self) -> Vec<u8> {
            ATR.to_vec()
        }
        fn power_on(&mut self) {
            self.log.lock().unwrap().push("on".into());
        }
        fn power_off(&mut self) {
            self.selected = false;
            self.log.lock().unwrap().push("off".into());
        }
        fn reset(&mut self) {
            self.selected = false;
            self.log.lock().unwrap().push("reset".into());
        }
        fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
            self.log.lock().unwrap().push(format!("apdu {}", tsm_gp::hex::encode(apdu)));
            if apdu.len() < 4 {
                return vec![0x67, 0x00];
            }
            if apdu[1] == 0xA4 {
                self.selected = true;
            }
            if !self.selected {
                return vec![0x6D, 0x00];
            }
            let mut r = vec![apdu[1]];
            // Echo a long answer for the extended-length check.
            if apdu[1] == 0xB0 {
                r = vec![0xAB; 1000];
            }
            r.extend_from_slice(&[0x90, 0x00]);
            r
        }
    }

    fn opts() -> VpcdOptions {
        VpcdOptions {
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(100),
            poll_interval: Duration::from_millis(10),
            frame_timeout: Duration::from_millis(300),
            ..VpcdOptions::default()
        }
    }

    /// The vpcd side of one connection.
    struct FakeVpcd(TcpStream);

    impl FakeVpcd {
        fn accept(l: &TcpListener) -> Self {
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            FakeVpcd(s)
        }
        fn send(&mut self, payload: &[u8]) {
            let mut b = (payload.len() as u16).to_be_bytes().to_vec();
            b.extend_from_slice(payload);
            self.0.write_all(&b).unwrap();
        }
        fn recv(&mut self) -> Vec<u8> {
            let mut h = [0u8; 2];
            self.0.read_exact(&mut h).unwrap();
            let mut p = vec![0u8; u16::from_be_bytes(h) as usize];
            self.0.read_exact(&mut p).unwrap();
            p
        }
        fn apdu(&mut self, c: &[u8]) -> Vec<u8> {
            self.send(c);
            self.recv()
        }
        /// Waits until the card closed the connection.
        fn expect_closed(&mut self) {
            let mut b = [0u8; 1];
            assert_eq!(self.0.read(&mut b).unwrap(), 0, "connection should be closed by the card");
        }
    }

    struct Running {
        stop: Arc<AtomicBool>,
        handle: Option<std::thread::JoinHandle<Result<(), VpcdError>>>,
    }

    impl Running {
        fn finish(mut self) -> Result<(), VpcdError> {
            self.stop.store(true, Ordering::SeqCst);
            self.handle.take().unwrap().join().unwrap()
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }

    fn start(addr: String, mut dev: Probe, o: VpcdOptions) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || run(&mut dev, &addr, o, &s2));
        Running { stop, handle: Some(handle) }
    }

    fn listener() -> (TcpListener, String) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap().to_string();
        (l, a)
    }

    #[test]
    fn vpcd_control_frames_and_apdus() {
        let (l, addr) = listener();
        let (dev, log) = Probe::new();
        let card = start(addr, dev, opts());
        let mut v = FakeVpcd::accept(&l);
        // ATR polls are answered at once, powered or not.
        for _ in 0..3 {
            let t = Instant::now();
            v.send(&[CTRL_ATR]);
            assert_eq!(v.recv(), ATR);
            assert!(t.elapsed() < Duration::from_millis(200), "ATR poll took {:?}", t.elapsed());
        }
        v.send(&[CTRL_ON]);
        v.send(&[CTRL_ATR]);
        assert_eq!(v.recv(), ATR);
        assert_eq!(v.apdu(&[0x00, 0xA4, 0x04, 0x00, 0x00]), [0xA4, 0x90, 0x00]);
        assert_eq!(v.apdu(&[0x80, 0xCA, 0x00, 0x66, 0x00]), [0xCA, 0x90, 0x00]);
        // Reset reaches the device: the selection is gone.
        v.send(&[CTRL_RESET]);
        assert_eq!(v.apdu(&[0x80, 0xCA, 0x00, 0x66, 0x00]), [0x6D, 0x00]);
        // An extended-length command and a long answer travel whole.
        let mut ext = vec![0x00, 0xB0, 0x00, 0x00, 0x00, 0x01, 0x2C];
        ext.extend_from_slice(&[0x11; 300]);
        ext.extend_from_slice(&[0x00, 0x00]);
        v.apdu(&[0x00, 0xA4, 0x04, 0x00, 0x00]);
        let r = v.apdu(&ext);
        assert_eq!(r.len(), 1002);
        assert_eq!(&r[1000..], [0x90, 0x00]);
        // Unknown control bytes are ignored, short frames are APDUs for the device.
        v.send(&[0x03]);
        assert_eq!(v.apdu(&[0x00, 0xA4]), [0x67, 0x00]);
        v.send(&[CTRL_OFF]);
        v.send(&[CTRL_ATR]);
        assert_eq!(v.recv(), ATR);
        card.finish().unwrap();
        let log = log.lock().unwrap().clone();
        let expect = [
            "on",
            "apdu 00A4040000",
            "apdu 80CA006600",
            "reset",
            "apdu 80CA006600",
        ];
        assert_eq!(&log[..5], expect);
        assert!(log.contains(&"off".to_string()));
        assert_eq!(log.iter().filter(|e| e.as_str() == "apdu 00A4").count(), 1);
    }

    #[test]
    fn vpcd_reconnects_after_empty_frame() {
        let (l, addr) = listener();
        let (dev, log) = Probe::new();
        let card = start(addr, dev, opts());
        let mut v = FakeVpcd::accept(&l);
        v.send(&[CTRL_ON]);
        v.send(&[]);
        v.expect_closed();
        // The card comes back on a new connection and still works.
        let mut v = FakeVpcd::accept(&l);
        v.send(&[CTRL_ATR]);
        assert_eq!(v.recv(), ATR);
        card.finish().unwrap();
        // Dropping the connection powered the device off.
        assert!(log.lock().unwrap().contains(&"off".to_string()));
    }

    #[test]
    fn vpcd_reconnects_after_truncated_frames() {
        let (l, addr) = listener();
        let (dev, _log) = Probe::new();
        let card = start(addr, dev, opts());
        // Length says 10, 3 bytes follow, then the connection closes.
        let mut v = FakeVpcd::accept(&l);
        v.0.write_all(&[0x00, 0x0A, 0x00, 0xA4, 0x04]).unwrap();
        drop(v);
        // Length says 10, 3 bytes follow, then nothing: the frame timeout ends it.
        let mut v = FakeVpcd::accept(&l);
        v.0.write_all(&[0x00, 0x0A, 0x00, 0xA4, 0x04]).unwrap();
        v.expect_closed();
        // Half a header, then nothing.
        let mut v = FakeVpcd::accept(&l);
        v.0.write_all(&[0x00]).unwrap();
        v.expect_closed();
        let mut v = FakeVpcd::accept(&l);
        v.send(&[CTRL_ATR]);
        assert_eq!(v.recv(), ATR);
        card.finish().unwrap();
    }

    #[test]
    fn vpcd_waits_for_vpcd_to_appear_and_stops_cleanly() {
        let (l, addr) = listener();
        drop(l); // nothing listens yet
        let (dev, _log) = Probe::new();
        let card = start(addr.clone(), dev, opts());
        std::thread::sleep(Duration::from_millis(150));
        let l = TcpListener::bind(&addr).unwrap();
        let mut v = FakeVpcd::accept(&l);
        v.send(&[CTRL_ATR]);
        assert_eq!(v.recv(), ATR);
        // vpcd goes away and comes back.
        drop(v);
        let mut v = FakeVpcd::accept(&l);
        v.send(&[CTRL_ATR]);
        assert_eq!(v.recv(), ATR);
        let t = Instant::now();
        card.finish().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "stop took {:?}", t.elapsed());
        v.expect_closed();
    }

    #[test]
    fn vpcd_stop_while_vpcd_absent() {
        let (l, addr) = listener();
        drop(l);
        let (dev, _log) = Probe::new();
        let card = start(addr, dev, opts());
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        card.finish().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn vpcd_gives_up_after_max_attempts_or_without_reconnect() {
        let (l, addr) = listener();
        drop(l);
        let stop = AtomicBool::new(false);
        let (mut dev, _) = Probe::new();
        let o = VpcdOptions { max_connect_attempts: Some(3), ..opts() };
        let e = run(&mut dev, &addr, o, &stop).unwrap_err();
        assert_eq!(e.code(), "vpcd.connect");
        assert!(matches!(e, VpcdError::Connect { attempts: 3, .. }), "{e}");

        let (l, addr) = listener();
        let o = VpcdOptions { reconnect: false, ..opts() };
        let h = std::thread::spawn(move || {
            let (mut dev, _) = Probe::new();
            run(&mut dev, &addr, o, &AtomicBool::new(false))
        });
        let mut v = FakeVpcd::accept(&l);
        v.send(&[]);
        let e = h.join().unwrap().unwrap_err();
        assert_eq!(e.code(), "vpcd.empty_frame");

        let e = run(&mut dev, "not an address", opts(), &stop).unwrap_err();
        assert_eq!(e.code(), "vpcd.address");
    }

    /// Persists when the probe's command was an "update" (INS D6), as the CLI's hook does when
    /// the card's state changed.
    struct Persist {
        saved: Arc<Mutex<Vec<Vec<u8>>>>,
        fail: bool,
        apdu_lines: Arc<Mutex<Vec<String>>>,
    }

    impl VpcdHooks<Probe> for Persist {
        fn after_apdu(&mut self, device: &mut Probe, command: &[u8], response: &[u8]) -> Result<(), String> {
            assert!(device.selected || response == [0x6D, 0x00]);
            if command.get(1) == Some(&0xD6) {
                if self.fail {
                    return Err("disk full".into());
                }
                self.saved.lock().unwrap().push(command.to_vec());
            }
            Ok(())
        }
        fn event(&mut self, event: &Event<'_>) {
            if let Event::Apdu { command, response, elapsed } = event {
                self.apdu_lines.lock().unwrap().push(describe_apdu(command, response, *elapsed));
            }
        }
    }

    #[test]
    fn vpcd_hook_persists_before_answering() {
        for fail in [false, true] {
            let (l, addr) = listener();
            let saved = Arc::new(Mutex::new(Vec::new()));
            let lines = Arc::new(Mutex::new(Vec::new()));
            let mut hooks = Persist { saved: saved.clone(), fail, apdu_lines: lines.clone() };
            let stop = Arc::new(AtomicBool::new(false));
            let s2 = stop.clone();
            let h = std::thread::spawn(move || {
                let (mut dev, _) = Probe::new();
                run_with(&mut dev, &addr, opts(), &s2, &mut hooks)
            });
            let mut v = FakeVpcd::accept(&l);
            v.send(&[CTRL_ON]);
            assert_eq!(v.apdu(&[0x00, 0xA4, 0x04, 0x00, 0x00]), [0xA4, 0x90, 0x00]);
            v.send(&[0x00, 0xD6, 0x00, 0x00, 0x02, 0x12, 0x34]);
            if fail {
                // No answer: the card leaves rather than acknowledge an unsaved change.
                v.expect_closed();
                let e = h.join().unwrap().unwrap_err();
                assert_eq!(e.code(), "vpcd.persist");
                assert!(saved.lock().unwrap().is_empty());
            } else {
                assert_eq!(v.recv(), [0xD6, 0x90, 0x00]);
                stop.store(true, Ordering::SeqCst);
                h.join().unwrap().unwrap();
                assert_eq!(*saved.lock().unwrap(), vec![vec![0x00, 0xD6, 0x00, 0x00, 0x02, 0x12, 0x34]]);
                let lines = lines.lock().unwrap();
                assert_eq!(lines.len(), 2);
                // Headers and lengths only, never the data field.
                assert!(lines[1].starts_with("00 D6 00 00 +3B -> 9000 1B"), "{}", lines[1]);
                assert!(!lines[1].contains("1234"));
            }
        }
    }

    #[test]
    fn vpcd_describe_apdu_hides_data() {
        let d = describe_apdu(&[0x84, 0xD8, 0x01, 0x81, 0x03, 0xAA, 0xBB, 0xCC], &[0x01, 0x02, 0x90, 0x00], Duration::ZERO);
        assert_eq!(d, "84 D8 01 81 +4B -> 9000 2B 0.0 ms");
        assert_eq!(describe_apdu(&[0x00], &[], Duration::ZERO), "(1 bytes) -> ---- 0.0 ms");
    }
}
