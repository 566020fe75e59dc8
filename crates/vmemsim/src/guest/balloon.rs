//! The balloon driver in the guest [ESX 3.2] (VMware's vmmemctl): it polls
//! a target size set by the host and inflates by allocating guest frames
//! from the guest kernel's own allocator, pinning them, so the guest frees
//! memory with its own policy (its free frames first, then its reclaim) and
//! the host may free their backing frames; deflating gives them back to the
//! guest allocator. The driver never touches the frames it holds. A guest
//! out of free frames takes balloon frames back (deflate on OOM).

use super::GuestOs;

/// The balloon driver of one guest (the frames it holds are the guest
/// kernel's: [`GuestOs::balloon_size`]).
#[derive(Clone, Debug, Default)]
pub struct Balloon {
    new: Vec<u64>,
    /// Pages inflated so far (all time).
    pub inflated: u64,
    /// Pages deflated so far (all time; not those the guest took back on
    /// running out of memory, [`GuestOs::balloon_oom_deflates`]).
    pub deflated: u64,
}

impl Balloon {
    /// Allocate up to `n` pages from `guest`'s allocator into the balloon
    /// (fewer when the guest is down to its watermark). Returns the new
    /// pages, whose host backing the caller frees.
    pub fn inflate(&mut self, guest: &mut GuestOs, n: u64) -> &[u64] {
        self.new.clear();
        for _ in 0..n {
            let Some(f) = guest.balloon_alloc() else {
                break;
            };
            self.new.push(f);
        }
        self.inflated += self.new.len() as u64;
        &self.new
    }

    /// Return up to `n` pages to `guest`'s allocator (the last inflated
    /// first). Returns how many.
    pub fn deflate(&mut self, guest: &mut GuestOs, n: u64) -> u64 {
        let mut k = 0;
        while k < n && guest.balloon_free().is_some() {
            k += 1;
        }
        self.deflated += k;
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GuestConfig;

    #[test]
    fn inflate_takes_free_guest_frames_and_deflate_returns_them() {
        // 8 MiB guest = 2048 frames; the first 2 MiB chunk is the kernel's:
        // 1536 free. The balloon leaves 1% (20 frames).
        let cfg = GuestConfig {
            mem_mib: 8,
            ..GuestConfig::default()
        };
        let mut g = GuestOs::new(&cfg);
        assert_eq!((g.free_frames(), g.balloon_watermark()), (1536, 20));
        let mut b = Balloon::default();
        let got = b.inflate(&mut g, 100).to_vec();
        assert_eq!(got.len(), 100);
        // The allocator splits the top chunk (gPFN 512) in order.
        assert_eq!((got[0], got[99]), (512, 611));
        assert_eq!((g.free_frames(), g.balloon_size()), (1436, 100));
        // More than is free: down to the watermark, no more.
        assert_eq!(b.inflate(&mut g, 5000).len(), 1416);
        assert_eq!(
            (g.free_frames(), g.balloon_size(), b.inflated),
            (20, 1516, 1516)
        );
        assert_eq!(b.deflate(&mut g, 16), 16);
        assert_eq!((g.free_frames(), g.balloon_size()), (36, 1500));
        assert_eq!(b.deflate(&mut g, 5000), 1500);
        assert_eq!(
            (g.free_frames(), g.balloon_size(), b.deflated),
            (1536, 0, 1516)
        );
    }

    /// A guest out of free frames takes the balloon's last inflated frame
    /// back, counting each in `balloon_oom_deflates` (and not in the
    /// driver's `deflated`); an empty balloon gives nothing and counts
    /// nothing.
    #[test]
    fn deflate_on_oom_takes_the_last_inflated_frame_and_counts_it() {
        let cfg = GuestConfig {
            mem_mib: 8,
            ..GuestConfig::default()
        };
        let mut g = GuestOs::new(&cfg);
        let mut b = Balloon::default();
        assert_eq!(b.inflate(&mut g, 3).to_vec(), vec![512, 513, 514]);
        assert_eq!(g.deflate_on_oom(), Some(514));
        assert_eq!(g.deflate_on_oom(), Some(513));
        assert_eq!((g.balloon_oom_deflates, g.balloon_size()), (2, 1));
        assert_eq!(g.deflate_on_oom(), Some(512));
        assert_eq!(g.deflate_on_oom(), None);
        assert_eq!((g.balloon_oom_deflates, b.deflated), (3, 0));
    }
}
