//! # tsm-se — a simulated GlobalPlatform secure element
//!
//! A card manager (GPCS 2.3) with an issuer security domain, supplementary security domains
//! with their own keys and secure channels, a registry of load files, modules and
//! applications, life cycles, privileges, memory quotas and the failure behaviour of real
//! cards. Loaded packages are bound by AID to native application models (no Java Card
//! bytecode is executed). The whole card state saves to a file and loads back; a deterministic
//! mode reproduces recorded sessions bit for bit.
//!
//! ```
//! use tsm_gp::profile::CardProfile;
//! use tsm_se::{CardConfig, SimCard};
//!
//! let mut card = SimCard::new(CardProfile::builtin("uicc").unwrap(), CardConfig::default().seeded(7)).unwrap();
//! // SELECT the ISD, then GET DATA CPLC.
//! assert_eq!(card.transmit(&[0x00, 0xA4, 0x04, 0x00, 0x00]).ends_with(&[0x90, 0x00]), true);
//! let cplc = card.transmit(&[0x80, 0xCA, 0x9F, 0x7F, 0x00]);
//! assert_eq!(&cplc[..3], &[0x9F, 0x7F, 0x2A]);
//! ```
//!
//! Transports: in process ([`tsm_gp::transport::Transport`], [`CardDevice`]) and vpcd, so that
//! pcscd shows the card as a reader to any PC/SC program.

mod card;
pub mod config;
mod content;
pub mod device;
pub mod error;
pub mod models;
pub mod rng;
mod sd;
pub mod state;
pub mod vpcd;

pub use card::{LOGICAL_CHANNELS, SD_MODULE_AID, SD_PACKAGE_AID, SimCard};
pub use config::{CardConfig, GP_TEST_KEY, INITIAL_KEY_VERSION, KeySet};
pub use device::CardDevice;
pub use error::SeError;
pub use models::{AppContext, AppModel, GenericModel, InstallInfo, ModelFactory, ModelRegistry, StoreDataBlock};
pub use state::CardState;
