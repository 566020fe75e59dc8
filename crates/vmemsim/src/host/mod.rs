//! The host side: the pool of host-physical frames every VM and the
//! hypervisor's own tables draw from ([`HostMemory`]), and the host's state
//! of one VM ([`Vm`]: VPID, p2m, EPT root, vCPU registers, counters).
//!
//! Per-pCPU hardware (TLBs, walk caches, line cache) is [`crate::mmu::Hw`];
//! a mode's own per-VM state (shadow pages, PV machine tables) lives in the
//! mode, next to its [`Vm`] in a [`crate::hv::Machine`].

pub mod bt;
pub mod config;
pub mod memory;
pub mod snapshot_vm;
pub mod vm;

pub use bt::BinaryTranslator;
pub use memory::{HostMemory, VmId, HV_FRAME_BASE};
pub use vm::Vm;
