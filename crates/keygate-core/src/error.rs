use thiserror::Error;

/// Everything that can go wrong in the core. Messages never contain secret material.
#[derive(Debug, Error)]
pub enum CoreError {
    #[error("CO0001 keyring is empty")]
    EmptyKeyring,
    #[error("CO0002 invalid master key entry {entry}: {reason}")]
    InvalidMasterKey { entry: String, reason: String },
    #[error("CO0003 duplicate master key id {0}")]
    DuplicateKid(String),
    #[error("CO0004 sealing failed: {0}")]
    Seal(String),
    #[error("CO0005 sealed key rejected: {0}")]
    Unseal(&'static str),
    #[error("CO0006 sealed key was made under unknown master key id {0}")]
    UnknownKid(String),
    #[error("CO0007 invalid identifier: {0}")]
    InvalidId(&'static str),
    #[error("CO0008 invalid OpenAI key: {0}")]
    InvalidOpenAiKey(&'static str),
}
