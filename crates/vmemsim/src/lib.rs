//! vmemsim: a fast, faithful simulator of how a virtual machine monitor
//! virtualizes memory.
//!
//! Layers, each depending only on those above it in this list:
//! - [`addr`], [`pte`]: address-space types and x86/EPT entry layouts;
//! - [`config`]: the TOML configuration, defaults with sources;
//! - [`mem`]: physical memory holding page-table pages;
//! - [`mmu`]: TLBs, paging-structure caches, nested TLB, walkers (no virtualization);
//! - [`host`]: host frames, p2m, EPT; [`esx`]: the ESX memory manager's policies;
//! - [`guest`]: the guest OS model (processes, VMAs, page tables, faults, fork...);
//! - [`hv`]: the MMU virtualization modes and the machine that runs a guest on one;
//! - [`stats`], [`cost`]: counters and the cost model that prices them;
//! - [`workload`]: built-in workloads; [`sim`]: the simulation loop, with the
//!   measured [`window`]; [`report`]: output.
//!
//! Traces come from the `vmemsim-trace` crate as [`vmemsim_trace::Record`]s.

pub mod addr;
pub mod config;
pub mod cost;
pub mod esx;
pub mod guest;
pub mod host;
pub mod hostsim;
pub mod hv;
pub mod mem;
pub mod mmu;
pub mod pte;
pub mod report;
pub mod sched;
pub mod sim;
pub mod stats;
pub mod window;
pub mod workload;

pub use config::Config;
pub use sim::{run_mode, ModeKind, ModeResult};

/// Errors of a simulation run: bad input or a guest the configuration
/// cannot hold. Architectural events (faults, exits) are counted, not errors.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The guest ran out of guest-physical memory: reclaim could not free
    /// enough (no guest swap, swap full, or nothing left to swap).
    #[error("{who} is out of memory: the workload needs more than guest.mem_mib = {mem_mib} MiB and guest reclaim freed too little (guest.swap_mib = {swap_mib} MiB); raise either")]
    GuestOutOfMemory {
        /// The guest: "the guest", or `VM "name"` on a host.
        who: String,
        /// Configured guest memory, MiB.
        mem_mib: u64,
        /// Configured guest swap, MiB.
        swap_mib: u64,
    },
    /// A shared host could not keep its reserve of free frames: nothing
    /// swappable is left (direct and native VMs' memory and guest page
    /// tables are never swapped), or one operation needed more than the
    /// reserve.
    #[error("host out of memory while VM {vm} ran ({free_frames} frames free): the VMs need more than host.mem_mib and nothing more can be swapped; raise host.mem_mib (or host.reserve_mib if one guest operation needs more)")]
    HostOutOfMemory {
        /// Index of the VM that was running.
        vm: u32,
        /// Free frames left.
        free_frames: u64,
    },
    /// The host swap device is full.
    #[error("host swap full: host.swap_mib = {swap_mib} MiB cannot hold what the VMs need beyond host.mem_mib; raise either")]
    HostSwapFull {
        /// Configured host swap, MiB.
        swap_mib: u64,
    },
    /// More live processes than PCIDs.
    #[error("more than {limit} live processes: PCIDs exhausted (set guest.pcid = false)")]
    TooManyProcesses {
        /// PCIDs available.
        limit: u32,
    },
    /// The trace could not be read.
    #[error(transparent)]
    Trace(#[from] vmemsim_trace::TraceError),
    /// A bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A bad workload name or parameter.
    #[error("{0}")]
    Workload(String),
    /// A trace event no kernel could have produced (a process forking
    /// itself, a range beyond the address space): the trace is corrupt.
    #[error("impossible event in the trace: pid {pid} {event}: {why}")]
    BadEvent {
        /// The process the event belongs to.
        pid: u32,
        /// The event and its arguments, e.g. "fork child 5".
        event: String,
        /// What makes it impossible.
        why: String,
    },
    /// An access to a gVA no x86-64 process can touch.
    #[error("impossible access in the trace: pid {pid} gVA {addr:#x}: {why}")]
    BadAccess {
        /// The accessing process.
        pid: u32,
        /// The gVA.
        addr: u64,
        /// What makes it impossible.
        why: String,
    },
    /// A cost total does not fit in 64 bits.
    #[error("cost overflow: the {component} cycles exceed 2^64 (counts or cost keys too large)")]
    CostOverflow {
        /// The component of [`cost::Cycles`] that overflowed, e.g. "hypervisor".
        component: &'static str,
    },
}
