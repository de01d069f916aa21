//! People signing in: WebAuthn passkey ceremonies ([`passkeys`]), the flows built on
//! them ([`flows`]: sign up, sign in, confirm), cookie sessions with
//! step-up freshness ([`session`]), and the Origin check that guards every
//! state-changing cookie-authenticated request ([`csrf`]).

pub mod csrf;
pub mod flows;
pub mod passkeys;
pub mod session;

pub use passkeys::Passkeys;
pub use session::{FreshSession, UserSession};
