//! PC/SC transport: readers through pcscd (real cards, or the simulated SE through vpcd).
