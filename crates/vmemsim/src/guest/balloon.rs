//! The balloon driver in the guest [ESX 3.2] (VMware's vmmemctl): it polls
//! a target size set by the host and inflates by allocating guest frames
//! from the guest kernel's own allocator, pinning them, so the guest frees
//! memory with its own policy (its free frames first, then its reclaim) and
//! the host may free their backing frames; deflating gives them back to the
//! guest allocator. The driver never touches the frames it holds.

use super::GuestOs;

/// The pages one guest's balloon holds.
#[derive(Clone, Debug, Default)]
pub struct Balloon {
    pages: Vec<u64>,
    /// Pages inflated so far (all time).
    pub inflated: u64,
    /// Pages deflated so far (all time).
    pub deflated: u64,
}

impl Balloon {
    /// Pages held now.
    pub fn size(&self) -> u64 {
        self.pages.len() as u64
    }

    /// True when `gpfn` is in the balloon (linear scan: tests only).
    pub fn holds(&self, gpfn: u64) -> bool {
        self.pages.contains(&gpfn)
    }

    /// Allocate up to `n` pages from `guest`'s allocator into the balloon
    /// (fewer when the guest has no free frame left). Returns the new
    /// pages, whose host backing the caller frees.
    pub fn inflate(&mut self, guest: &mut GuestOs, n: u64) -> &[u64] {
        let start = self.pages.len();
        for _ in 0..n {
            let Some(f) = guest.balloon_alloc() else {
                break;
            };
            self.pages.push(f);
        }
        self.inflated += (self.pages.len() - start) as u64;
        &self.pages[start..]
    }

    /// Return up to `n` pages to `guest`'s allocator (the last inflated
    /// first). Returns how many.
    pub fn deflate(&mut self, guest: &mut GuestOs, n: u64) -> u64 {
        let k = n.min(self.size());
        for _ in 0..k {
            let f = self.pages.pop().expect("k <= size");
            guest.balloon_free(f);
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
        assert_eq!((g.free_frames(), b.size()), (1436, 100));
        // More than is free: down to the watermark, no more.
        assert_eq!(b.inflate(&mut g, 5000).len(), 1416);
        assert_eq!((g.free_frames(), b.size(), b.inflated), (20, 1516, 1516));
        assert_eq!(b.deflate(&mut g, 16), 16);
        assert_eq!((g.free_frames(), b.size()), (36, 1500));
        assert_eq!(b.deflate(&mut g, 5000), 1500);
        assert_eq!((g.free_frames(), b.size(), b.deflated), (1536, 0, 1516));
    }
}
