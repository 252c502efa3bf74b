//! Identity: the access key, the JSON Web Tokens signed with it, and what a token says about
//! who is calling (a client user, or a server application using the REST API).

pub mod config;
pub mod jwt;
pub mod principal;

pub use jwt::{Claims, JwtError};
pub use principal::{Principal, Role};
