//! The memory manager of VMware ESX Server \[ESX\] (Waldspurger, OSDI 2002)
//! on a multi-VM host: share-based allocation with an idle memory tax
//! ([`shares`]), idle-memory estimation by statistical sampling
//! ([`idle`]), reclamation states by free memory ([`states`]), and its
//! configuration with admission control ([`config`]).
//!
//! Each module is policy only: it decides from numbers it is given. The
//! host run loop (`hostsim`) does the invalidations, ballooning and
//! swapping these decisions call for.

pub mod config;
pub mod idle;
pub mod manager;
pub mod shares;
pub mod states;

pub use config::{EsxConfig, EsxSection, Reclaim, SampleClock, VmAlloc};
pub use states::{State, StateMachine, Thresholds};
