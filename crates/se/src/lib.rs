//! # tsm-se — a simulated GlobalPlatform secure element
//!
//! A card manager (GPCS 2.3) with an issuer security domain, supplementary security domains
//! with their own keys and secure channels, a registry of load files, modules and
//! applications, life cycles, privileges, memory quotas and the failure behaviour of real
//! cards. Loaded packages are bound by AID to native application models (no Java Card
//! bytecode is executed). The whole card state saves to a file and loads back; a deterministic
//! mode reproduces recorded sessions bit for bit.
//!
//! Transports: in process ([`tsm_gp::transport::Transport`]) and vpcd, so that pcscd shows
//! the card as a reader to any PC/SC program.

pub mod device;
pub mod vpcd;

pub use device::CardDevice;
