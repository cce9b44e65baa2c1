//! # tsm-se — a simulated GlobalPlatform secure element
//!
//! A card manager (GPCS 2.3) with an issuer security domain, supplementary security domains
//! with their own keys and secure channels, a registry of load files, modules and
//! applications, life cycles, privileges, memory quotas and the failure behaviour of real
//! cards. Loaded packages are bound by AID to native application models (no Java Card
//! bytecode is executed, see [`models`] and `docs/card-models.md`). The whole card state saves
//! to a JSON file (key values sealed) and loads back; a deterministic mode reproduces recorded
//! sessions bit for bit.
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
//! Transports: in process ([`tsm_gp::transport::Transport`], [`CardDevice`]) and [`vpcd`], so
//! that pcscd shows the card as a reader to any PC/SC program. Profiles (what kind of card):
//! `docs/card-profiles.md`.
//!
//! ## Behaviour, where the specification leaves a choice
//!
//! - **Security domains.** The ISD (privileges `9EFC80`) and supplementary SDs created by
//!   INSTALL [for install] of the built-in package `A0000001515350`, module
//!   `A000000151535041`, with the Security Domain privilege. A new SSD runs the SCP named in
//!   its install parameters (`C9 { 81 id i }`, one of the profile's; default: the ISD's) and
//!   holds an **initial key set, version `FF`**: [`CardConfig::ssd_initial_key`] (the GP test
//!   key `40..4F` by default) for ENC, MAC and DEK. Adding a complete key set of another
//!   version (PUT KEY P1 = `00`, or STORE DATA DGIs `00B9`/`8113`) removes the initial set, as
//!   on real cards. Its KDD is the ISD's; its sequence counter starts at 0.
//! - **Who may do what.** Commands other than SELECT, MANAGE CHANNEL, GET DATA, INITIALIZE
//!   UPDATE and EXTERNAL AUTHENTICATE need a secure channel (`6982`). Content management: the
//!   ISD for anything; an SSD with Authorized Management for its own content; an SSD with
//!   Delegated Management for its own content, one command at a time, with a token (below);
//!   Global Delete / Global Lock / Global Registry privileges widen DELETE / SET STATUS / GET
//!   STATUS and registry update. An SSD may grant only privileges it holds itself and never
//!   the card-wide ones (Card Lock, Card Terminate, Card Reset, CVM, Global *, Final
//!   Application, Authorized and Delegated Management, Token Verification, Receipt Generation,
//!   Mandated DAP, Contactless Activation): `6985`. Privileges that only SDs can have, given to an
//!   application, or an SD module installed without the SD privilege (or the reverse): `6A80`.
//! - **Delegated Management** (GPCS 2.3 §9.1.3, Appendix C; formats in
//!   `tsm_gp::gp::delegated`). The ISD holds the Token Verification key, an ECDSA P-256
//!   public key (PUT KEY key version `70`, id `01`, type `B0` with parameters reference `F0 00`;
//!   only in an SD with the Token Verification privilege, kept in clear in the state) and the
//!   Receipt Generation key (PUT KEY of one 3DES or AES key, version `71`, id `01`, in an SD
//!   with the Receipt Generation privilege; sealed like every key and never used for a secure
//!   channel). Tokens are ECDSA P-256 / SHA-256 signatures (`r ‖ s`) over the command's token
//!   signature data; **RSA tokens are not supported**. An SSD with Delegated Management and
//!   without Authorized Management (with both it needs none) must send a token with every
//!   INSTALL (but [for personalization]) and every DELETE of content: none, or one that does
//!   not verify (made for another command, AID or P1, or signed by another key), is `6A80`
//!   (GPCS names no status for a failed token; `6A80` is its "incorrect values in the command
//!   data"), and nothing changes; a token from an SSD
//!   without Delegated Management is `6985`, valid or not; no Token Verification key in the
//!   ISD is `6985`. The ISD ignores tokens. A verified token lets the SSD manage its own
//!   content for that command (the same rules as Authorized Management; a registry update
//!   only of its own applications); INSTALL [for load] then needs the Load File Data Block
//!   hash (`6A80`), which the Load Token covers. With a Receipt Generation key in the ISD, a
//!   delegated command answers a receipt instead of `00`: `LV(receipt) ‖ LV(counter) ‖
//!   LV(IIN ‖ CIN)`; the Load Receipt comes with the last LOAD block, INSTALL [for load]
//!   answers `00`; [for make selectable] answers an Install Receipt. The confirmation counter
//!   (2 bytes, GET DATA `C2` on the ISD) is saved with the card; at `FFFF` delegated commands
//!   are refused (`6985`). Tokens carry no replay protection (the card keeps no token
//!   identifiers): a replayed token is refused only when its command no longer applies (a
//!   second DELETE finds nothing, `6A88`).
//! - **Card life cycle** (GPCS 2.3 §5.1): OP_READY → INITIALIZED → SECURED ↔ CARD_LOCKED, any →
//!   TERMINATED, by SET STATUS P1 = `80` from the ISD (lock also from an SD with Card Lock,
//!   terminate with Card Terminate; unlock only by the ISD); other transitions `6985`. In
//!   CARD_LOCKED only the ISD (and a Final Application) is selectable: SELECT of the ISD answers
//!   its FCI with `6283`, others `6A82`; the ISD still authenticates and takes GET DATA, GET
//!   STATUS and SET STATUS, everything else `6985`. TERMINATED: the ISD answers SELECT (`6283`)
//!   and GET DATA only; everything else `6985`.
//! - **Applications.** SET STATUS P2 with b8 set locks (keeping the other bits), any P2 without
//!   b8 unlocks; a locked application fails SELECT with `6999`, an INSTALLED one is not found
//!   (`6A82`). An SD becomes PERSONALIZED (`0F`) by SET STATUS from itself or its manager.
//! - **Memory.** A load file costs its Load File Data Block size (or the `C6` minimum if
//!   larger); an application instance its `C8` quota, else its `D8` reservation, else
//!   [`CardConfig::instance_cost`]; an SSD [`CardConfig::sd_instance_cost`]; volatile memory
//!   the `C7`/`D7` values against [`CardConfig::volatile_memory`]. `C8` in an SSD's install
//!   parameters is the quota of everything associated with it (and below). Over the card total
//!   or any quota: `6A84` with nothing changed. GET DATA `FF21` reports the free memory (through
//!   an SSD with a quota, the smaller of quota and card).
//! - **Loading.** INSTALL [for load] then LOAD blocks numbered from 0; any error ends the load.
//!   On the last block: DAP blocks are accepted but **not verified** (the SD they name must
//!   exist), a ciphered LFDB (`D4`) is refused (`6A80`), the hash (20 bytes SHA-1, 32 bytes
//!   SHA-256) is checked over the LFDB as received (`6A80`), the LFDB must parse as a CAP
//!   (`.ijc` form) whose package AID is the load file AID (`6A80`).
//! - **Responses.** DELETE and every INSTALL form answer `00` (no receipt, except for delegated
//!   commands, above), the last LOAD block `00`, the other blocks no data (GPCS 2.3 §11.2.3,
//!   §11.5.3, §11.6.3); profile quirks move
//!   or drop these bytes as recorded cards do. GET STATUS pages whole entries into at most 256
//!   bytes (224 with R-MAC) and answers `6310`; P2 b1 continues from where the previous
//!   response stopped (`6985` without one). Tagged entries carry `4F`, `9F70`, `C5`, `C4`, `CC`
//!   (applications, SDs, the ISD) and `4F`, `9F70`, `CE`, `CC`, `84` (load files), with the
//!   variants of the profile's quirks (`docs/card-profiles.md`).
//! - **Content a card already holds** (ROM packages, pre-issued applications and security
//!   domains, a copy of a real card's registry) is seeded as state with
//!   [`SimCard::registry_mut`], without commands. What the card declares in GET DATA `66`/`67`
//!   beyond its profile is [`CardConfig::identity`]; an eUICC (quirk `euicc`) answers SGP.22
//!   GetEuiccData with [`CardConfig::eid`].
//! - **Applications with a secure channel.** A model that declares
//!   [`AppModel::secure_channel`] (the built-in [`EchoModel`]) takes INITIALIZE UPDATE and
//!   EXTERNAL AUTHENTICATE while selected, with its security domain's keys, and gets its
//!   commands unwrapped and its responses protected (the GP API `SecureChannel`).
//! - **Secure channels** (card side of `tsm_gp::scp`): SCP02 with explicit initiation (i =
//!   15, 55, …; no R-MAC), SCP03 S8/S16 with any valid i (the host challenge length picks the
//!   mode when the profile lists both). A secure messaging error closes the session (`6982`, and
//!   `6982` for every protected command after it); so does a command without secure messaging
//!   while the level requires C-MAC, a new INITIALIZE UPDATE, SELECT, reset and power off.
//!   Failed EXTERNAL AUTHENTICATEs (wrong host cryptogram or C-MAC) are counted per key version
//!   in the persistent state; at [`CardConfig::auth_retry_limit`] INITIALIZE UPDATE with that
//!   key set answers `6983`. A success resets the count. EXTERNAL AUTHENTICATE consumes the
//!   handshake whatever its outcome (the card never retries; a second one gets `6985`).
//! - **Logical channels** 0 to 3 (MANAGE CHANNEL); a new channel starts with the ISD selected.
//!   Chained commands (`6884`) and GET RESPONSE are not supported: vpcd/T=1 carries whole
//!   responses. Extended-length APDUs only when the profile allows them (else `6700`).
//! - **Randomness.** Card challenges (SCP02 without the pseudo-random bit, SCP03 without i
//!   bit `10`) come from SplitMix64 when [`CardConfig::seed`] is set, else from the OS; the
//!   generator's state is saved with the card. [`SimCard::script_challenges`] and
//!   [`SimCard::force_sequence_counter`] replay recorded sessions: `tests/replay.rs` replays
//!   every recorded session of `testdata/vectors` byte for byte on cards built from their
//!   traces.

mod card;
pub mod config;
mod content;
mod delegated;
pub mod device;
pub mod error;
pub mod models;
pub mod rng;
pub mod registry;
mod renc;
mod sd;
pub mod state;
pub mod vpcd;

pub use card::{LOGICAL_CHANNELS, SD_MODULE_AID, SD_PACKAGE_AID, SimCard};
pub use config::{CardConfig, GP_TEST_KEY, INITIAL_KEY_VERSION, KeySet};
pub use device::CardDevice;
pub use registry::RegistryMut;
pub use error::SeError;
pub use models::{AppContext, AppModel, EchoModel, GenericModel, InstallInfo, ModelFactory, ModelRegistry, StoreDataBlock};
pub use state::{AppRecord, CardIdentity, CardState, DomainRecord, LoadFileRecord};
