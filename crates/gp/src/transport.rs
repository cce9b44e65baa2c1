//! The one interface between host code and a card: send a command APDU, get the response.
//! Implemented by the simulated SE (in process), PC/SC readers and the SERAM agent; this crate
//! only defines it and never links a transport.

use thiserror::Error;

/// A transport failure (the card did not answer): distinct from a status word, which is an
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("no card present")]
    NoCard,
    #[error("card was reset or removed")]
    CardReset,
    #[error("transport: {0}")]
    Other(String),
}

impl TransportError {
    pub fn code(&self) -> &'static str {
        match self {
            TransportError::NoCard => "transport.no_card",
            TransportError::CardReset => "transport.card_reset",
            TransportError::Other(_) => "transport.other",
        }
    }
}

/// Sends one APDU and returns the complete response (data ‖ SW1 SW2). Implementations do
/// not handle `61xx`/`6Cxx`; the session layer does (see [`crate::sw::FollowUp`]).
pub trait Transport {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).transmit(apdu)
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).transmit(apdu)
    }
}
