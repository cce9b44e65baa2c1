//! PC/SC transport: readers through pcscd (real cards, or the simulated SE through vpcd).
//!
//! A thin, safe layer over the `pcsc` crate:
//! - [`list_readers`] and [`reader_status`] (is a card present, its ATR);
//! - [`PcscCard::connect`] (or [`PcscCard::connect_first`], the first reader with a card),
//!   which implements [`Transport`] with receive buffers sized for extended-length APDUs;
//! - [`PcscCard::transaction`]: an exclusive-access guard that ends the PC/SC transaction when
//!   dropped and is itself a [`Transport`], so a whole GP session can run inside it;
//! - [`PcscError`] with stable [`code`](PcscError::code)s and messages that say what to do
//!   (`pcscd is not running: start it with `pcscd``).
//!
//! `61xx`/`6Cxx` are left to the session layer (`tsm_gp::session`), as the [`Transport`]
//! contract says.

use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, State};
use std::ffi::CString;
use thiserror::Error;
use tsm_gp::transport::{Transport, TransportError};

/// How the connection shares the reader with other programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ShareMode {
    /// Others may use the card between our commands (use [`PcscCard::transaction`] to keep
    /// them out during a sequence).
    #[default]
    Shared,
    /// Nobody else may connect while we are connected.
    Exclusive,
    /// Direct access to the reader, without a card (reader control only).
    Direct,
}

impl ShareMode {
    fn to_pcsc(self) -> pcsc::ShareMode {
        match self {
            ShareMode::Shared => pcsc::ShareMode::Shared,
            ShareMode::Exclusive => pcsc::ShareMode::Exclusive,
            ShareMode::Direct => pcsc::ShareMode::Direct,
        }
    }
}

/// The transmission protocol negotiated with the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    T0,
    T1,
    Raw,
}

impl Protocol {
    fn from_pcsc(p: pcsc::Protocol) -> Self {
        match p {
            pcsc::Protocol::T0 => Protocol::T0,
            pcsc::Protocol::T1 => Protocol::T1,
            pcsc::Protocol::RAW => Protocol::Raw,
        }
    }
}

/// PC/SC failures, with what to do about them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PcscError {
    #[error("pcscd is not running: start it with `pcscd` (or `sudo systemctl start pcscd.socket`)")]
    NoService,
    #[error("no readers: connect a reader, or put a simulated card into pcscd with `tsm card run`")]
    NoReaders,
    #[error("no reader has a card (readers: {readers})")]
    NoCardInAnyReader { readers: String },
    #[error("reader {reader:?} not found (readers: {readers})")]
    UnknownReader { reader: String, readers: String },
    #[error("no card in reader {reader:?}")]
    NoCard { reader: String },
    #[error("the card in {reader:?} is in use by another program (exclusive connection or transaction)")]
    SharingViolation { reader: String },
    #[error("the card in {reader:?} was reset by another program; reconnect")]
    CardReset { reader: String },
    #[error("the card was removed from {reader:?}")]
    CardRemoved { reader: String },
    #[error("the card in {reader:?} does not answer (mute, or unpowered)")]
    Unresponsive { reader: String },
    #[error("reader name {0:?} contains a NUL byte")]
    BadReaderName(String),
    #[error("PC/SC {operation}: {message}")]
    Other { operation: &'static str, message: String },
}

impl PcscError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            PcscError::NoService => "pcsc.no_service",
            PcscError::NoReaders => "pcsc.no_readers",
            PcscError::NoCardInAnyReader { .. } => "pcsc.no_card",
            PcscError::UnknownReader { .. } => "pcsc.unknown_reader",
            PcscError::NoCard { .. } => "pcsc.no_card",
            PcscError::SharingViolation { .. } => "pcsc.sharing_violation",
            PcscError::CardReset { .. } => "pcsc.card_reset",
            PcscError::CardRemoved { .. } => "pcsc.card_removed",
            PcscError::Unresponsive { .. } => "pcsc.unresponsive",
            PcscError::BadReaderName(_) => "pcsc.bad_reader_name",
            PcscError::Other { .. } => "pcsc.other",
        }
    }

    /// Maps a `pcsc` error met during `operation` on `reader` (empty when none).
    fn map(e: pcsc::Error, operation: &'static str, reader: &str) -> Self {
        let reader = reader.to_string();
        match e {
            pcsc::Error::NoService | pcsc::Error::ServiceStopped => PcscError::NoService,
            pcsc::Error::NoReadersAvailable => PcscError::NoReaders,
            pcsc::Error::UnknownReader | pcsc::Error::ReaderUnavailable => {
                PcscError::UnknownReader { reader, readers: list_readers().map(|r| join(&r)).unwrap_or_else(|_| "?".into()) }
            }
            pcsc::Error::NoSmartcard => PcscError::NoCard { reader },
            pcsc::Error::RemovedCard => PcscError::CardRemoved { reader },
            pcsc::Error::ResetCard => PcscError::CardReset { reader },
            pcsc::Error::SharingViolation => PcscError::SharingViolation { reader },
            pcsc::Error::UnresponsiveCard | pcsc::Error::UnpoweredCard | pcsc::Error::UnsupportedCard => PcscError::Unresponsive { reader },
            other => PcscError::Other { operation, message: other.to_string() },
        }
    }
}

impl From<PcscError> for TransportError {
    fn from(e: PcscError) -> Self {
        match e {
            PcscError::NoCard { .. } | PcscError::CardRemoved { .. } => TransportError::NoCard,
            PcscError::CardReset { .. } => TransportError::CardReset,
            other => TransportError::Other(other.to_string()),
        }
    }
}

fn join(readers: &[String]) -> String {
    if readers.is_empty() { "none".into() } else { readers.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join(", ") }
}

fn context() -> Result<Context, PcscError> {
    Context::establish(Scope::User).map_err(|e| PcscError::map(e, "establish context", ""))
}

fn readers_of(ctx: &Context) -> Result<Vec<String>, PcscError> {
    match ctx.list_readers_owned() {
        Ok(names) => Ok(names.into_iter().map(|n| n.to_string_lossy().into_owned()).collect()),
        Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
        Err(e) => Err(PcscError::map(e, "list readers", "")),
    }
}

/// The readers pcscd knows, in its order. No readers is an empty list;
/// [`PcscError::NoService`] when pcscd is not running.
pub fn list_readers() -> Result<Vec<String>, PcscError> {
    readers_of(&context()?)
}

/// A reader and what is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderStatus {
    pub name: String,
    /// A card is present.
    pub card_present: bool,
    /// Another program has the card exclusively.
    pub exclusive: bool,
    /// The card does not answer reset.
    pub mute: bool,
    /// The ATR of the card, when present.
    pub atr: Vec<u8>,
}

/// Every reader with its card state (one `SCardGetStatusChange` without waiting).
pub fn reader_status() -> Result<Vec<ReaderStatus>, PcscError> {
    let ctx = context()?;
    let names = readers_of(&ctx)?;
    let mut states = Vec::with_capacity(names.len());
    for n in &names {
        let c = CString::new(n.as_str()).map_err(|_| PcscError::BadReaderName(n.clone()))?;
        states.push(ReaderState::new(c, State::UNAWARE));
    }
    if !states.is_empty() {
        ctx.get_status_change(std::time::Duration::ZERO, &mut states).map_err(|e| PcscError::map(e, "get status", ""))?;
    }
    Ok(names
        .into_iter()
        .zip(states.iter())
        .map(|(name, s)| {
            let st = s.event_state();
            let card_present = st.contains(State::PRESENT);
            ReaderStatus {
                name,
                card_present,
                exclusive: st.contains(State::EXCLUSIVE),
                mute: st.contains(State::MUTE),
                atr: if card_present { s.atr().to_vec() } else { Vec::new() },
            }
        })
        .collect())
}

/// A connection to the card in one reader.
pub struct PcscCard {
    card: pcsc::Card,
    reader: String,
    atr: Vec<u8>,
    protocol: Option<Protocol>,
    share: ShareMode,
    /// Receive buffer for the largest extended-length response (65536 data bytes + SW).
    buf: Vec<u8>,
}

impl std::fmt::Debug for PcscCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscCard")
            .field("reader", &self.reader)
            .field("atr", &tsm_gp::hex::encode(&self.atr))
            .field("protocol", &self.protocol)
            .field("share", &self.share)
            .finish()
    }
}

impl PcscCard {
    /// Connects to the card in `reader` (T=0 or T=1, whichever the card offers).
    pub fn connect(reader: &str, share: ShareMode) -> Result<PcscCard, PcscError> {
        let ctx = context()?;
        let name = CString::new(reader).map_err(|_| PcscError::BadReaderName(reader.to_string()))?;
        let protocols = if share == ShareMode::Direct { Protocols::UNDEFINED } else { Protocols::ANY };
        let card = ctx.connect(&name, share.to_pcsc(), protocols).map_err(|e| PcscError::map(e, "connect", reader))?;
        let mut c = PcscCard { card, reader: reader.to_string(), atr: Vec::new(), protocol: None, share, buf: vec![0; pcsc::MAX_BUFFER_SIZE_EXTENDED] };
        c.refresh_status()?;
        Ok(c)
    }

    /// Connects to the first reader that holds a card.
    pub fn connect_first(share: ShareMode) -> Result<PcscCard, PcscError> {
        let readers = reader_status()?;
        if readers.is_empty() {
            return Err(PcscError::NoReaders);
        }
        match readers.iter().find(|r| r.card_present && !r.mute) {
            Some(r) => PcscCard::connect(&r.name, share),
            None => Err(PcscError::NoCardInAnyReader { readers: join(&readers.into_iter().map(|r| r.name).collect::<Vec<_>>()) }),
        }
    }

    fn refresh_status(&mut self) -> Result<(), PcscError> {
        if self.share == ShareMode::Direct {
            return Ok(());
        }
        let st = self.card.status2_owned().map_err(|e| PcscError::map(e, "status", &self.reader))?;
        self.atr = st.atr().to_vec();
        self.protocol = st.protocol2().map(Protocol::from_pcsc);
        Ok(())
    }

    /// The reader's name.
    pub fn reader(&self) -> &str {
        &self.reader
    }
    /// The card's Answer To Reset.
    pub fn atr(&self) -> &[u8] {
        &self.atr
    }
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// Starts an exclusive transaction: no other program reaches the card until the guard is
    /// dropped (or [`Transaction::end`]). Run a whole secure channel session inside one.
    pub fn transaction(&mut self) -> Result<Transaction<'_>, PcscError> {
        let PcscCard { card, reader, buf, .. } = self;
        let tx = card.transaction().map_err(|e| PcscError::map(e, "begin transaction", reader))?;
        Ok(Transaction { tx, reader, buf })
    }

    /// Warm reset of the card (volatile state, secure channels and selections are lost).
    pub fn reset(&mut self) -> Result<(), PcscError> {
        self.card
            .reconnect(self.share.to_pcsc(), Protocols::ANY, Disposition::ResetCard)
            .map_err(|e| PcscError::map(e, "reset", &self.reader))?;
        self.refresh_status()
    }

    /// Disconnects, leaving the card powered (`reset` false) or resetting it.
    pub fn disconnect(self, reset: bool) -> Result<(), PcscError> {
        let d = if reset { Disposition::ResetCard } else { Disposition::LeaveCard };
        let reader = self.reader;
        self.card.disconnect(d).map_err(|(_, e)| PcscError::map(e, "disconnect", &reader))
    }
}

fn transmit(card: &pcsc::Card, buf: &mut [u8], reader: &str, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
    match card.transmit(apdu, buf) {
        Ok(r) => Ok(r.to_vec()),
        Err(e) => Err(PcscError::map(e, "transmit", reader).into()),
    }
}

impl Transport for PcscCard {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        transmit(&self.card, &mut self.buf, &self.reader, apdu)
    }
}

/// An exclusive PC/SC transaction (`SCardBeginTransaction` … `SCardEndTransaction`), ended
/// when dropped, leaving the card as it is.
pub struct Transaction<'a> {
    tx: pcsc::Transaction<'a>,
    reader: &'a str,
    buf: &'a mut Vec<u8>,
}

impl Transaction<'_> {
    /// Ends the transaction, resetting the card (`reset`) or leaving it.
    pub fn end(self, reset: bool) -> Result<(), PcscError> {
        let d = if reset { Disposition::ResetCard } else { Disposition::LeaveCard };
        let reader = self.reader;
        self.tx.end(d).map_err(|(_, e)| PcscError::map(e, "end transaction", reader))
    }
}

impl Transport for Transaction<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        transmit(&self.tx, self.buf, self.reader, apdu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_do() {
        let e = PcscError::map(pcsc::Error::NoService, "establish context", "");
        assert_eq!(e, PcscError::NoService);
        assert_eq!(e.code(), "pcsc.no_service");
        assert!(e.to_string().contains("start it with `pcscd`"), "{e}");
        assert_eq!(PcscError::map(pcsc::Error::ServiceStopped, "x", ""), PcscError::NoService);
        assert_eq!(PcscError::map(pcsc::Error::NoReadersAvailable, "x", "").code(), "pcsc.no_readers");
        assert!(PcscError::NoReaders.to_string().starts_with("no readers"));
        let e = PcscError::map(pcsc::Error::SharingViolation, "connect", "Reader 0");
        assert_eq!(e.code(), "pcsc.sharing_violation");
        assert!(e.to_string().contains("\"Reader 0\""));
        assert_eq!(PcscError::map(pcsc::Error::NoSmartcard, "connect", "R").code(), "pcsc.no_card");
        let e = PcscError::map(pcsc::Error::CommError, "transmit", "R");
        assert_eq!(e.code(), "pcsc.other");
        assert!(e.to_string().starts_with("PC/SC transmit: "), "{e}");
    }

    #[test]
    fn transport_errors_keep_their_kind() {
        let t: TransportError = PcscError::CardRemoved { reader: "R".into() }.into();
        assert_eq!(t, TransportError::NoCard);
        let t: TransportError = PcscError::CardReset { reader: "R".into() }.into();
        assert_eq!(t, TransportError::CardReset);
        let t: TransportError = PcscError::NoService.into();
        assert_eq!(t.code(), "transport.other");
        assert!(t.to_string().contains("pcscd"));
    }

    /// Works with or without pcscd: without it, the error names the fix; with it, a list.
    #[test]
    fn list_readers_without_or_with_pcscd() {
        match list_readers() {
            Ok(readers) => assert!(readers.iter().all(|r| !r.is_empty())),
            Err(e) => {
                assert_eq!(e, PcscError::NoService, "{e}");
                assert!(e.to_string().contains("pcscd"));
            }
        }
        match reader_status() {
            Ok(rs) => assert!(rs.iter().all(|r| r.card_present || r.atr.is_empty())),
            Err(e) => assert_eq!(e.code(), "pcsc.no_service"),
        }
        if let Err(e) = PcscCard::connect("no such reader 1b2c", ShareMode::Shared) {
            assert!(matches!(e.code(), "pcsc.no_service" | "pcsc.unknown_reader"), "{e}");
        }
    }

    #[test]
    fn bad_reader_names_are_refused_before_pcsc() {
        // A NUL cannot cross into C; refused whether pcscd runs or not.
        let e = PcscCard::connect("a\0b", ShareMode::Shared).unwrap_err();
        assert!(matches!(e.code(), "pcsc.bad_reader_name" | "pcsc.no_service"), "{e}");
    }
}
