//! The guest's swap device (a virtual disk of `guest.swap_mib`): slots of
//! 4 KiB with a reference count each (a fork copies a swap entry into the
//! child, as Linux's `swap_duplicate`), and the swap entry a not-present
//! PTE holds for a page in a slot.

use crate::pte::x86;

/// Software bit of a not-present PTE marking a swap entry: bit 9, one the
/// MMU ignores [SDM Vol. 3 4.5: with P = 0 every other bit is ignored].
/// Linux keeps its swap type and offset in such a PTE too
/// (`arch/x86/include/asm/pgtable_64.h`); the layout here is ours.
pub const SWAP_BIT: u64 = 1 << 9;

/// True when `pte` is a swap entry (not present, the swap bit set).
#[inline]
pub fn is_swap(pte: u64) -> bool {
    pte & x86::P == 0 && pte & SWAP_BIT != 0
}

/// The not-present PTE for a page in swap slot `slot`.
#[inline]
pub fn entry(slot: u64) -> u64 {
    x86::make(slot, SWAP_BIT)
}

/// The slot of swap entry `pte`.
#[inline]
pub fn slot_of(pte: u64) -> u64 {
    x86::frame(pte)
}

/// Slots of the guest's swap device.
#[derive(Clone, Debug)]
pub struct GuestSwap {
    refs: Vec<u16>,
    free: Vec<u64>,
    next: u64,
    used: u64,
}

impl GuestSwap {
    /// A device of `slots` 4 KiB slots, all free.
    pub fn new(slots: u64) -> Self {
        GuestSwap {
            refs: vec![0; slots as usize],
            free: Vec::new(),
            next: 0,
            used: 0,
        }
    }

    /// A free slot holding one reference (freed slots reused last-freed
    /// first, after every slot was used once), or `None` when full.
    pub fn alloc(&mut self) -> Option<u64> {
        let s = if (self.next as usize) < self.refs.len() {
            self.next += 1;
            self.next - 1
        } else {
            self.free.pop()?
        };
        self.refs[s as usize] = 1;
        self.used += 1;
        Some(s)
    }

    /// One more PTE holds `slot` (fork).
    pub fn dup(&mut self, slot: u64) {
        self.refs[slot as usize] += 1;
    }

    /// A PTE no longer holds `slot` (swap-in, unmap, exit); the slot is
    /// free when none does. Returns whether it became free.
    pub fn put(&mut self, slot: u64) -> bool {
        let r = &mut self.refs[slot as usize];
        assert!(*r > 0, "guest swap slot {slot} released twice");
        *r -= 1;
        if *r == 0 {
            self.free.push(slot);
            self.used -= 1;
        }
        *r == 0
    }

    /// Slots in use.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Slots on the device.
    pub fn slots(&self) -> u64 {
        self.refs.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_slots_are_counted() {
        let e = entry(77);
        assert!(is_swap(e) && e & x86::P == 0);
        assert_eq!(slot_of(e), 77);
        assert!(!is_swap(0) && !is_swap(x86::make(77, x86::P | SWAP_BIT)));
        let mut s = GuestSwap::new(2);
        assert_eq!(s.slots(), 2);
        assert_eq!((s.alloc(), s.alloc(), s.alloc()), (Some(0), Some(1), None));
        s.dup(1);
        // `put` says when the slot became free: the caller then drops what
        // it knew of the slot's content (mutation testing: `== 0` as `!=`
        // dropped it while the child still held the slot).
        assert!(!s.put(1));
        assert_eq!(s.used(), 2, "still held by the child");
        assert!(s.put(1));
        assert_eq!(s.used(), 1);
        assert_eq!(s.alloc(), Some(1), "freed slot reused");
    }
}
