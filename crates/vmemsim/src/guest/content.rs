//! What each guest frame holds, as a 64-bit content id: the model of page
//! contents that content-based page sharing (Waldspurger, OSDI 2002,
//! section 4; Linux KSM) compares.
//!
//! The simulator does not keep page bytes. A frame's content id follows
//! these rules (docs/sharing.md):
//!
//! - a frame the guest kernel zeroes (demand-zero fault, a new anonymous
//!   or heap page) holds [`ZERO`];
//! - a copy-on-write copy holds its source's content;
//! - a page of a mapped file holds [`file_page`]`(file, offset)`: the same
//!   file at the same page offset gives the same content in every process
//!   and every VM. The file is named by its fingerprint (size and hash,
//!   `.vmt` version 3), not its path, so one library reached by two paths
//!   is one file; a file with no fingerprint is named by its path;
//! - a store changes a frame's content to [`after_store`]`(previous,
//!   offset in page, size, ordinal)`, where the ordinal counts the stores
//!   of the storing process (from 1): the same program doing the same work
//!   in two VMs writes the same contents, different work different ones.
//!   A store of a value equal to what was there still changes the content
//!   (the trace has no values);
//! - page-table frames hold [`PAGE_TABLE`], which is never shared (their
//!   entries are gPAs written by the guest kernel; the host write-protects
//!   them in shadow paging anyway).
//!
//! Contents are tracked only when asked ([`super::GuestOs::track_contents`],
//! a host with sharing on): `run` and `compare` keep none and pay nothing.
//! Tracking costs 8 bytes per guest frame and, per store, one hash of 32
//! bytes (XXH3) and no allocation.

use rustc_hash::FxHashMap;
use vmemsim_trace::FileId;

/// A frame's content id (64-bit, as ESX's page hash).
pub type ContentId = u64;

/// Content of a zeroed frame.
pub const ZERO: ContentId = 0;

/// Content of a guest page-table frame: never equal to another's.
pub const PAGE_TABLE: ContentId = u64::MAX;

/// What a frame's content is, for reports of what sharing finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ContentKind {
    /// All zero.
    Zero = 0,
    /// A page of a mapped file, not written since.
    File = 1,
    /// Written by a store (or copied from a written frame).
    Anon = 2,
    /// A page of a snapshot of a real process, in an anonymous VMA (heap,
    /// stack, `.bss`, or memory not backed by a file).
    Snapshot = 3,
    /// A guest page table.
    PageTable = 4,
    /// A page of a snapshot of a real process, in a VMA mapping a file
    /// (text, read-only data, relocated data of a library).
    SnapshotFile = 5,
}

impl ContentKind {
    /// Index in per-kind arrays (zero, file, anon, snapshot; page tables
    /// 4): both snapshot kinds are 3.
    pub fn index(self) -> usize {
        match self {
            ContentKind::SnapshotFile => 3,
            k => k as usize,
        }
    }
    fn from_u8(v: u8) -> ContentKind {
        match v {
            0 => ContentKind::Zero,
            1 => ContentKind::File,
            2 => ContentKind::Anon,
            3 => ContentKind::Snapshot,
            5 => ContentKind::SnapshotFile,
            _ => ContentKind::PageTable,
        }
    }
}

/// The file a VMA maps: its identity key and the file offset of the
/// VMA's first byte. Copy, so VMAs stay plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileRef {
    /// [`file_key`] of the file.
    pub key: u64,
    /// Offset in the file of the VMA's first byte, in bytes.
    pub offset: u64,
}

impl FileRef {
    /// The same file, for a VMA starting `delta` bytes further on (a split).
    #[inline]
    pub fn advanced(self, delta: u64) -> FileRef {
        FileRef {
            key: self.key,
            offset: self.offset.wrapping_add(delta),
        }
    }
}

/// Keep hashes off the two reserved ids.
#[inline]
fn not_reserved(h: u64) -> ContentId {
    match h {
        ZERO => 1,
        PAGE_TABLE => PAGE_TABLE - 1,
        h => h,
    }
}

fn hash4(tag: u64, a: u64, b: u64, c: u64) -> u64 {
    let mut buf = [0u8; 32];
    buf[..8].copy_from_slice(&tag.to_le_bytes());
    buf[8..16].copy_from_slice(&a.to_le_bytes());
    buf[16..24].copy_from_slice(&b.to_le_bytes());
    buf[24..].copy_from_slice(&c.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&buf)
}

const TAG_FILE: u64 = 0x6669_6c65; // "file"
const TAG_PAGE: u64 = 0x7061_6765; // "page"
const TAG_STORE: u64 = 0x7374_6f72; // "stor"

/// The identity key of a file: from its fingerprint (size, hash), or from
/// its path when it has none.
pub fn file_key(f: &FileId) -> u64 {
    match f.fingerprint {
        Some(p) => hash4(TAG_FILE, p.size, p.hash, 0),
        None => hash4(
            TAG_FILE,
            u64::MAX,
            xxhash_rust::xxh3::xxh3_64(f.path.as_bytes()),
            0,
        ),
    }
}

/// Key of the "image" file: what implicit mappings (created on first touch
/// of memory no recorded mapping covers: the executable, the dynamic
/// loader and the stack that Valgrind's loader maps) hold before they are
/// written, page by virtual address.
pub const IMAGE_KEY: u64 = 0x696d_6167_6520_6b65; // "image ke"

/// The [`FileRef`] of an implicit mapping starting at `start`: page `va`
/// of it holds `file_page(IMAGE_KEY, va)`.
pub fn image_ref(start: u64) -> FileRef {
    FileRef {
        key: IMAGE_KEY,
        offset: start,
    }
}

/// The [`FileRef`] of a recorded file-backed mapping.
pub fn file_ref(m: &vmemsim_trace::MappedFile) -> FileRef {
    FileRef {
        key: file_key(&m.file),
        offset: m.offset,
    }
}

/// Content of the 4 KiB page at byte `offset` (rounded down to a page) of
/// file `key`.
#[inline]
pub fn file_page(key: u64, offset: u64) -> ContentId {
    not_reserved(hash4(TAG_PAGE, key, offset >> 12, 0))
}

/// Content after a store of `size` bytes at `offset` in the page, the
/// `ordinal`-th store of its process, onto `prev`.
#[inline]
pub fn after_store(prev: ContentId, offset: u64, size: u64, ordinal: u64) -> ContentId {
    not_reserved(hash4(TAG_STORE ^ (size << 32), prev, offset, ordinal))
}

/// Content ids of every guest frame, and each process's store count.
#[derive(Clone, Debug)]
pub struct Contents {
    ids: Vec<ContentId>,
    /// [`ContentKind`] of each frame.
    kinds: Vec<u8>,
    stores: FxHashMap<u32, u64>,
    /// Contents given up front (a VM started from snapshots) for the first
    /// fault of (pid, virtual page number).
    preset: FxHashMap<(u32, u64), ContentId>,
}

impl Contents {
    /// `frames` guest frames, all zero.
    pub fn new(frames: u64) -> Self {
        Contents {
            ids: vec![ZERO; frames as usize],
            kinds: vec![ContentKind::Zero as u8; frames as usize],
            stores: FxHashMap::default(),
            preset: FxHashMap::default(),
        }
    }

    /// Content of guest frame `gpfn` (the last content it had when free).
    #[inline]
    pub fn get(&self, gpfn: u64) -> ContentId {
        self.ids[gpfn as usize]
    }

    /// What the content of `gpfn` is.
    #[inline]
    pub fn kind(&self, gpfn: u64) -> ContentKind {
        ContentKind::from_u8(self.kinds[gpfn as usize])
    }

    /// Set the content of `gpfn` (an id of [`ZERO`] is always of kind zero).
    #[inline]
    pub fn set(&mut self, gpfn: u64, id: ContentId, kind: ContentKind) {
        self.ids[gpfn as usize] = id;
        let kind = if id == ZERO { ContentKind::Zero } else { kind };
        self.kinds[gpfn as usize] = kind as u8;
    }

    /// Frames `to..to+n` get the contents of `from..from+n` (a copy).
    pub fn copy(&mut self, from: u64, to: u64, n: u64) {
        let (f, t, n) = (from as usize, to as usize, n as usize);
        self.ids.copy_within(f..f + n, t);
        self.kinds.copy_within(f..f + n, t);
    }

    /// Process `pid` stores `size` bytes at gPA `gpa`: the frame's content
    /// changes ([`after_store`]). A store crossing a page changes the
    /// first page only.
    #[inline]
    pub fn store(&mut self, pid: u32, gpa: u64, size: u16) {
        let n = self.stores.entry(pid).or_insert(0);
        *n += 1;
        let f = (gpa >> 12) as usize;
        self.ids[f] = after_store(self.ids[f], gpa & 0xfff, u64::from(size), *n);
        self.kinds[f] = ContentKind::Anon as u8;
    }

    /// The page `vpn` of `pid` holds `id` when it is first faulted in
    /// (instead of zero or its file's content).
    pub fn preset(&mut self, pid: u32, vpn: u64, id: ContentId) {
        self.preset.insert((pid, vpn), id);
    }

    /// The preset content of (`pid`, `vpn`), consumed.
    #[inline]
    pub fn take_preset(&mut self, pid: u32, vpn: u64) -> Option<ContentId> {
        if self.preset.is_empty() {
            return None;
        }
        self.preset.remove(&(pid, vpn))
    }

    /// Stores seen from `pid` so far.
    pub fn stores_of(&self, pid: u32) -> u64 {
        self.stores.get(&pid).copied().unwrap_or(0)
    }

    /// Guest frames tracked.
    pub fn frames(&self) -> u64 {
        self.ids.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmemsim_trace::Fingerprint;

    /// The two reserved ids are remapped to two different ids, neither
    /// reserved: a hash that hits one stays apart from a hash that hits
    /// the other (mutation testing: `PAGE_TABLE - 1` as `/ 1` returned the
    /// reserved id itself).
    #[test]
    fn reserved_hashes_are_remapped_apart() {
        let (z, t) = (not_reserved(ZERO), not_reserved(PAGE_TABLE));
        assert_ne!(z, t);
        for id in [z, t] {
            assert!(id != ZERO && id != PAGE_TABLE);
        }
        assert_eq!(not_reserved(12345), 12345);
    }

    /// Every kind stored for a frame reads back as itself, and its
    /// per-kind index is its own but for the two snapshot kinds (mutation
    /// testing: a dropped arm of the byte's decoding read a snapshot page
    /// back as a page table).
    #[test]
    fn each_kind_reads_back_as_itself() {
        use ContentKind::*;
        let kinds = [Zero, File, Anon, Snapshot, PageTable, SnapshotFile];
        let mut c = Contents::new(kinds.len() as u64);
        for (f, &k) in kinds.iter().enumerate() {
            c.set(f as u64, 100 + f as ContentId, k);
        }
        // Ids 100 and up: none is ZERO, which is always of kind zero.
        for (f, &k) in kinds.iter().enumerate() {
            assert_eq!(c.kind(f as u64), k, "frame {f}");
        }
        let idx: Vec<usize> = kinds.iter().map(|k| k.index()).collect();
        assert_eq!(idx, [0, 1, 2, 3, 4, 3]);
    }

    #[test]
    fn rules_are_deterministic_and_distinct() {
        let a = FileId {
            path: "/lib/a".into(),
            fingerprint: Some(Fingerprint { size: 10, hash: 7 }),
        };
        let b = FileId {
            path: "/other/path/to/a".into(),
            ..a.clone()
        };
        // Same fingerprint, different path: one file.
        assert_eq!(file_key(&a), file_key(&b));
        let k = file_key(&a);
        assert_eq!(file_page(k, 4096), file_page(k, 8191));
        assert_ne!(file_page(k, 0), file_page(k, 4096));
        let s1 = after_store(ZERO, 8, 8, 1);
        assert_eq!(s1, after_store(ZERO, 8, 8, 1));
        assert_ne!(s1, ZERO);
        assert_ne!(s1, after_store(ZERO, 8, 8, 2));
        assert_ne!(s1, after_store(ZERO, 16, 8, 1));
        assert_ne!(s1, after_store(ZERO, 8, 4, 1));
    }

    #[test]
    fn stores_count_per_process_and_copies_keep_content() {
        let mut c = Contents::new(8);
        c.store(1, 0x2008, 8);
        c.store(2, 0x3008, 8);
        // Each process's first store: ordinal 1 in both.
        assert_eq!(c.get(2), c.get(3));
        assert_eq!(c.get(2), after_store(ZERO, 8, 8, 1));
        c.store(1, 0x3008, 8);
        assert_eq!(c.get(3), after_store(after_store(ZERO, 8, 8, 1), 8, 8, 2));
        assert_eq!(c.stores_of(1), 2);
        c.copy(2, 6, 2);
        assert_eq!((c.get(6), c.get(7)), (c.get(2), c.get(3)));
        assert_eq!(c.get(0), ZERO);
    }

    /// A copy carries each frame's kind with its content: frames 3 and 4
    /// (a file page and a page table) copied to 6 and 7. (Kills `copy`'s
    /// kinds range `f + n` as `f * n`, which `copy(2, _, 2)` above cannot
    /// tell apart; shard 0.)
    #[test]
    fn copies_keep_each_frames_kind() {
        let mut c = Contents::new(8);
        let lib = FileId {
            path: "/lib/x.so".into(),
            fingerprint: None,
        };
        c.set(3, file_page(file_key(&lib), 0), ContentKind::File);
        c.set(4, after_store(ZERO, 0, 8, 1), ContentKind::PageTable);
        c.copy(3, 6, 2);
        assert_eq!(
            [c.kind(6), c.kind(7)],
            [ContentKind::File, ContentKind::PageTable]
        );
        assert_eq!((c.get(6), c.get(7)), (c.get(3), c.get(4)));
    }
}
