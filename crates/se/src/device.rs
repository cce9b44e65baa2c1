//! What a reader sees of a card: an ATR, power and reset, and APDUs in and out.

/// A card in a reader. `transmit` never fails: every problem is answered with a status word,
/// as a real card does.
pub trait CardDevice: Send {
    /// The Answer To Reset.
    fn atr(&self) -> Vec<u8>;
    /// Power on (cold reset).
    fn power_on(&mut self);
    /// Power off: volatile state (secure channels, selected applications) is lost.
    fn power_off(&mut self);
    /// Warm reset: like power off then on.
    fn reset(&mut self);
    /// Processes one command APDU (as sent by the PC/SC application, short or extended) and
    /// returns the complete response (data ‖ SW1 SW2).
    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8>;
}
