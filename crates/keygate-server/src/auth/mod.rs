//! People signing in: WebAuthn passkey ceremonies ([`passkeys`]), cookie sessions with
//! step-up freshness ([`session`]), and the Origin check that guards every
//! state-changing cookie-authenticated request ([`csrf`]).

pub mod csrf;
pub mod passkeys;
pub mod session;

pub use passkeys::Passkeys;
pub use session::{FreshSession, UserSession};
