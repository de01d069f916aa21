//! keygate's HTTP server: the application builder, the admin API, the `/v1` streaming
//! proxy and the embedded web pages. Routes are thin: they parse, call a service
//! function, and map its error through [`error::ServerError`], the one place errors
//! become HTTP.

pub mod accounting;
pub mod app;
pub mod auth;
pub mod client_deadline;
pub mod config;
pub mod demo;
pub mod error;
pub mod keyfile;
pub mod limiter;
pub mod master_keys;
pub mod metrics;
pub mod proxy;
pub mod request_id;
pub mod routes;
pub mod services;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod upstream;

pub use app::Application;
pub use config::{Config, RawConfig};
