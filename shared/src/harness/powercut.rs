//! A FUSE filesystem that loses power on request, after Jepsen's LazyFS: it passes everything
//! through to a backing folder except file data, which it keeps in memory until the file is
//! fsynced. [`PowerCutFs::cut_power`] throws the unsynced data away and unmounts, so whatever a
//! program wrote without `fsync` is gone when the folder is mounted again, as after a real power
//! cut.
//!
//! # Semantics
//!
//! - **Data writes** (`write(2)`, `pwrite(2)`, and the kernel's write-back of shared `mmap`s) are
//!   kept per file as dirty extents in memory; nothing reaches the backing file until that file
//!   is synced. Reads see the dirty extents laid over the backing file, and `stat` reports the
//!   logical size, unsynced appends included.
//! - **`fsync(2)` and `fdatasync(2)`** both write every dirty extent of the file to the backing
//!   file (even with `datasync`) and then sync the backing file. An O_SYNC write on a file syncs
//!   the whole file, not only that range, because the kernel turns it into a FUSE `fsync`
//!   without a range. `fsync` on a directory (`fsyncdir`) does nothing and succeeds: directory
//!   changes are already in the backing folder.
//! - **`close(2)` is not a sync**: FUSE `flush` and `release` keep the dirty data, as a page
//!   cache would. Data of a file that is still linked stays dirty after the kernel forgets the
//!   inode; data of a file that was unlinked is dropped once nothing refers to it.
//! - **O_SYNC / O_DSYNC files**: each write goes straight to the backing file, which is then
//!   synced, so it survives a cut.
//! - **Metadata** (lookup, getattr, mkdir, mknod, create, unlink, rmdir, symlink, link, rename,
//!   readdir, open, release, statfs, setattr with chmod/chown/utimes, fallocate) passes through
//!   to the backing folder at once and so always survives a cut. **Truncate** (setattr `size`,
//!   `O_TRUNC`) applies to the dirty extents and to the backing file at once; growing a file
//!   whose growth is still unsynced leaves zeros after a cut.
//!
//! This is more lenient than a real filesystem, where a create or rename is only durable after
//! an `fsync` of the directory and an unsynced file can come back empty or short. It is enough
//! for what the power-loss tests check, acknowledged messages in nats-server's store: their
//! fault is unsynced *data*, which this loses the way a power cut does.
//!
//! [`PowerCutFs::sync`] writes everything out, like `sync(1)`: a checkpoint after which a cut
//! loses only later writes. (nats-server with its default `sync_interval` does not sync a new
//! stream's `meta.inf` either, so a cut right after creating a stream loses the whole stream;
//! sync after creating it to test the loss of messages in a stream that survives.)
//!
//! After [`PowerCutFs::cut_power`], or `Drop`, the "power is off": every request, metadata
//! included, fails with `EIO`, so a process that still holds a file open cannot change the
//! backing folder behind the next mount. A busy mountpoint is detached lazily
//! ([`CutReport::lazy_unmount`]); its thread ends when the last file there is closed (at once
//! when fusectl is mounted at `/sys/fs/fuse/connections`: the connection is aborted).
//!
//! # Mounting
//!
//! fuser is built without libfuse: as root (with `CAP_SYS_ADMIN`) it mounts with `mount(2)`;
//! as any other user through the setuid `fusermount3` (Debian package `fuse3`). The kernel's
//! writeback cache is off (fuser does not ask for it), so every `write(2)` reaches this daemon
//! when it is made; attribute and entry TTLs are zero, so sizes are always the daemon's. Pages
//! are cached by the kernel normally (no `direct_io`), which keeps `mmap` working; the cache
//! goes with the unmount. Requests are served one at a time by one background thread; the state
//! sits behind a mutex, so counters can be read from other threads.
//!
//! # Limits
//!
//! - Files are created and chowned as the user running the test (no `setfsuid`), and
//!   permissions are not checked (the mount is for its owner only: no `allow_other`).
//! - Extended attributes, POSIX locks (the kernel keeps them locally), `SEEK_DATA`/`SEEK_HOLE`
//!   and `copy_file_range` are not passed through; fallocate only in modes 0 and KEEP_SIZE.
//! - Dirty data lives in memory without limit; meant for tests of a few MB.
//! - The backing folder must be on one filesystem (inodes are told apart by number).
//! - Needs `/proc/self/fd` to reopen files from their `O_PATH` descriptors; holds one such
//!   descriptor per file the kernel has looked up and not forgotten.
//! - Not root: unmounting goes through `fusermount3 -u -z`, and a cut while a process still has
//!   files open there waits until they are closed (kill the processes first).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use rustix::fs::{AtFlags, Mode, OFlags, CWD};

/// Attributes and entries are not cached by the kernel: sizes come from the daemon.
const TTL: Duration = Duration::ZERO;

/// Whether FUSE can be used here: the device, `/proc`, and the right to mount (root with
/// `CAP_SYS_ADMIN`, or `fusermount3`). The error says what is missing and how to get it.
pub fn available() -> Result<(), String> {
    let dev = Path::new("/dev/fuse");
    if !dev.exists() {
        return Err("/dev/fuse does not exist: load the module (`modprobe fuse`), or give the container the device \
                    (`--device /dev/fuse`)"
            .into());
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return Err(format!("cannot open /dev/fuse for reading and writing: {e}"));
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").map_err(|e| format!("cannot read /proc/filesystems: {e}"))?;
    if !filesystems.lines().any(|l| l.split_whitespace().last() == Some("fuse")) {
        return Err("the kernel does not list the `fuse` filesystem in /proc/filesystems".into());
    }
    if !Path::new("/proc/self/fd").is_dir() {
        return Err("/proc/self/fd is missing: /proc must be mounted".into());
    }
    if !has_cap_sys_admin() && fusermount().is_none() {
        return Err("mounting FUSE needs root (CAP_SYS_ADMIN) or the setuid helper fusermount3: \
                    `apt-get install fuse3` (scripts/install-deps does it when not root)"
            .into());
    }
    Ok(())
}

fn has_cap_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

fn fusermount() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/bin"), PathBuf::from("/usr/bin"), PathBuf::from("/sbin")])
        .flat_map(|d| [d.join("fusermount3"), d.join("fusermount")])
        .find(|p| p.is_file())
}

/// Counters of one mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// `fsync`/`fdatasync` requests on files (the kernel also sends one after each O_SYNC write).
    pub fsyncs: u64,
    /// `fsync` requests on directories (no-ops).
    pub dir_fsyncs: u64,
    /// Write requests that were kept in memory.
    pub buffered_writes: u64,
    /// Write requests on O_SYNC/O_DSYNC files, written through.
    pub sync_writes: u64,
    /// Bytes that reached the backing folder, by fsync or by O_SYNC writes.
    pub synced_bytes: u64,
    /// Bytes in memory now, not yet synced.
    pub dirty_bytes: u64,
}

/// What a power cut threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced bytes dropped (overlapping writes counted once).
    pub dropped_bytes: u64,
    /// Files that had unsynced data.
    pub dropped_files: usize,
    /// The mount's counters at the cut (`dirty_bytes` as it was before the drop).
    pub stats: Stats,
    /// The mountpoint was busy (a process still had files open) and was detached lazily.
    pub lazy_unmount: bool,
}

/// A mounted power-cut filesystem. Dropping it cuts the power too.
pub struct PowerCutFs {
    shared: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    backing: PathBuf,
    /// The FUSE connection's number (the minor of the mount's device), for
    /// `/sys/fs/fuse/connections/<n>/abort`.
    connection: Option<u32>,
}

impl std::fmt::Debug for PowerCutFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerCutFs").field("mountpoint", &self.mountpoint).field("backing", &self.backing).finish_non_exhaustive()
    }
}

impl PowerCutFs {
    /// Mounts a power-cut view of `backing` on `mountpoint` (created when missing) and serves it
    /// from a background thread. Neither folder may contain the other.
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<PowerCutFs> {
        available().map_err(io::Error::other)?;
        let backing = backing.canonicalize()?;
        std::fs::create_dir_all(mountpoint)?;
        let mountpoint = mountpoint.canonicalize()?;
        if mountpoint.starts_with(&backing) || backing.starts_with(&mountpoint) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the mountpoint {} and the backing folder {} must not contain each other", mountpoint.display(), backing.display()),
            ));
        }
        let root = File::from(rustix::fs::open(&backing, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?);
        let root_meta = root.metadata()?;
        let shared = Arc::new(Mutex::new(State::new(root, &root_meta)));

        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("powercut".into()), fuser::MountOption::NoAtime];
        config.n_threads = Some(1);
        let session = fuser::spawn_mount(Daemon { state: shared.clone() }, &mountpoint, &config)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot mount FUSE on {}: {e}", mountpoint.display())))?;
        let connection = std::fs::metadata(&mountpoint).ok().map(|m| rustix::fs::minor(m.dev()));
        Ok(PowerCutFs { shared, session: Some(session), mountpoint, backing, connection })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        lock(&self.shared).stats()
    }

    /// Writes every file's unsynced data to the backing folder, as `sync(1)` would: a checkpoint
    /// after which a cut loses only later writes. Returns the bytes written.
    pub fn sync(&self) -> io::Result<u64> {
        lock(&self.shared).sync_everything().map_err(|e| io::Error::from_raw_os_error(e.code()))
    }

    /// Cuts the power: drops every unsynced byte, fails every later request with `EIO`, and
    /// unmounts (lazily when busy). Call it after the processes using the mount are killed.
    pub fn cut_power(mut self) -> CutReport {
        self.shutdown()
    }

    fn shutdown(&mut self) -> CutReport {
        let mut report = lock(&self.shared).cut();
        let Some(session) = self.session.take() else { return report };
        // fuser unmounts (umount(2) as root, `fusermount3 -u -z` otherwise), then joins the
        // thread, which returns as soon as the kernel ends the connection.
        match session.umount_and_join() {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                // A process still has files open there. Abort the connection when fusectl is
                // mounted, so the thread ends at once (else it ends when the last file is
                // closed: all it can answer now is EIO), and detach the mount.
                report.lazy_unmount = true;
                if let Some(n) = self.connection {
                    let _ = std::fs::write(format!("/sys/fs/fuse/connections/{n}/abort"), "1");
                }
                if let Err(e) = rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH) {
                    eprintln!("powercut: lazy unmount of {} failed: {e}", self.mountpoint.display());
                }
            }
            Err(e) => eprintln!("powercut: unmounting {} failed: {e}", self.mountpoint.display()),
        }
        report
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Unsynced data of one file: non-overlapping, non-touching extents by offset.
#[derive(Debug, Default)]
struct Extents {
    map: BTreeMap<u64, Vec<u8>>,
    bytes: u64,
}

fn end_of(start: u64, data: &[u8]) -> u64 {
    start + data.len() as u64
}

impl Extents {
    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Where the last extent ends (0 when empty).
    fn end(&self) -> u64 {
        self.map.last_key_value().map_or(0, |(s, v)| end_of(*s, v))
    }

    fn insert(&mut self, start: u64, data: Vec<u8>) {
        if !data.is_empty() {
            self.bytes += data.len() as u64;
            self.map.insert(start, data);
        }
    }

    fn remove(&mut self, start: u64) -> Vec<u8> {
        let v = self.map.remove(&start).unwrap_or_default();
        self.bytes -= v.len() as u64;
        v
    }

    /// Starts of the extents that overlap or touch `[start, end]`, highest first.
    fn touching(&self, start: u64, end: u64) -> Vec<u64> {
        self.map.range(..=end).rev().take_while(|(s, v)| end_of(**s, v) >= start).map(|(s, _)| *s).collect()
    }

    fn write(&mut self, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = end_of(off, data);
        let mut touching = self.touching(off, end);
        let (start, mut buf) = match touching.last() {
            // Appending to (or overwriting inside) an extent that starts at or before `off`:
            // extend it in place, so a stream of appends stays linear.
            Some(&s0) if s0 <= off => {
                touching.pop();
                let mut buf = self.remove(s0);
                let rel = (off - s0) as usize;
                if buf.len() < rel + data.len() {
                    buf.resize(rel + data.len(), 0);
                }
                buf[rel..rel + data.len()].copy_from_slice(data);
                (s0, buf)
            }
            _ => (off, data.to_vec()),
        };
        // The rest start inside (off, end]; only the highest can reach past `end`.
        for s in touching {
            let v = self.remove(s);
            if end_of(s, &v) > end {
                buf.extend_from_slice(&v[(end - s) as usize..]);
            }
        }
        self.insert(start, buf);
    }

    /// Forgets `[start, end)`.
    fn remove_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let hit: Vec<u64> = self.map.range(..end).rev().take_while(|(s, v)| end_of(**s, v) > start).map(|(s, _)| *s).collect();
        for s in hit {
            let v = self.remove(s);
            let v_end = end_of(s, &v);
            if s < start {
                self.insert(s, v[..(start - s) as usize].to_vec());
            }
            if v_end > end {
                self.insert(end, v[(end - s) as usize..].to_vec());
            }
        }
    }

    fn truncate(&mut self, size: u64) {
        self.remove_range(size, u64::MAX);
    }

    /// Lays the extents over `buf`, which holds the file from `off`.
    fn overlay(&self, off: u64, buf: &mut [u8]) {
        let end = end_of(off, buf);
        for (s, v) in self.map.range(..end).rev().take_while(|(s, v)| end_of(**s, v) > off) {
            let from = (*s).max(off);
            let to = end_of(*s, v).min(end);
            buf[(from - off) as usize..(to - off) as usize].copy_from_slice(&v[(from - s) as usize..(to - s) as usize]);
        }
    }

    fn clear(&mut self) -> u64 {
        let bytes = self.bytes;
        self.map.clear();
        self.bytes = 0;
        bytes
    }
}

struct Inode {
    /// An `O_PATH` descriptor of the backing file: survives renames, and pins the backing inode
    /// so its number is not reused while it is in this table.
    fd: File,
    key: (u64, u64),
    /// Lookups the kernel holds (it returns them with `forget`).
    nlookup: u64,
    /// Open handles on this inode.
    opens: u64,
    dirty: Extents,
}

struct Handle {
    ino: u64,
    /// The backing file opened with the same access mode (files only).
    file: Option<File>,
    writable: bool,
    append: bool,
    /// A directory's listing, taken at opendir.
    entries: Vec<(u64, FileType, std::ffi::OsString)>,
}

struct State {
    powered: bool,
    inodes: HashMap<u64, Inode>,
    by_key: HashMap<(u64, u64), u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    stats: Stats,
}

type Res<T> = Result<T, Errno>;

fn errno(e: impl Into<io::Error>) -> Errno {
    Errno::from(e.into())
}

fn proc_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    let nsecs = u32::try_from(nsecs.clamp(0, 999_999_999)).unwrap_or(0);
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nsecs)
    } else {
        UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) + Duration::new(0, nsecs)
    }
}

fn kind_of(ft: std::fs::FileType) -> FileType {
    FileType::from_std(ft).unwrap_or(FileType::RegularFile)
}

fn timespec(t: Option<TimeOrNow>) -> rustix::fs::Timespec {
    match t {
        None => rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT },
        Some(TimeOrNow::Now) => rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW },
        Some(TimeOrNow::SpecificTime(t)) => {
            let (secs, nsecs) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()),
                Err(e) => (-i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX), 0),
            };
            rustix::fs::Timespec { tv_sec: secs, tv_nsec: nsecs.into() }
        }
    }
}

/// Reads as much of `buf` as the file has from `off`.
fn read_full_at(file: &File, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, off) {
            Ok(0) => break,
            Ok(n) => {
                buf = &mut buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl State {
    fn new(root: File, meta: &std::fs::Metadata) -> State {
        let key = (meta.dev(), meta.ino());
        let root = Inode { fd: root, key, nlookup: 1, opens: 0, dirty: Extents::default() };
        State {
            powered: true,
            inodes: HashMap::from([(INodeNo::ROOT.0, root)]),
            by_key: HashMap::from([(key, INodeNo::ROOT.0)]),
            next_ino: 2,
            handles: HashMap::new(),
            next_fh: 1,
            stats: Stats::default(),
        }
    }

    fn stats(&self) -> Stats {
        Stats { dirty_bytes: self.inodes.values().map(|i| i.dirty.bytes).sum(), ..self.stats }
    }

    /// Power off: drop the dirty data and every descriptor.
    fn cut(&mut self) -> CutReport {
        let stats = self.stats();
        let mut report = CutReport { stats, ..CutReport::default() };
        if !self.powered {
            return report;
        }
        self.powered = false;
        for inode in self.inodes.values_mut() {
            if !inode.dirty.is_empty() {
                report.dropped_files += 1;
                report.dropped_bytes += inode.dirty.clear();
            }
        }
        self.handles.clear();
        self.inodes.clear();
        self.by_key.clear();
        report
    }

    fn check_power(&self) -> Res<()> {
        if self.powered {
            Ok(())
        } else {
            Err(Errno::EIO)
        }
    }

    fn inode(&self, ino: INodeNo) -> Res<&Inode> {
        self.check_power()?;
        self.inodes.get(&ino.0).ok_or(Errno::ESTALE)
    }

    fn inode_mut(&mut self, ino: INodeNo) -> Res<&mut Inode> {
        self.check_power()?;
        self.inodes.get_mut(&ino.0).ok_or(Errno::ESTALE)
    }

    fn handle(&self, fh: FileHandle) -> Res<&Handle> {
        self.check_power()?;
        self.handles.get(&fh.0).ok_or(Errno::EBADF)
    }

    fn attr(&self, ino: INodeNo) -> Res<FileAttr> {
        let inode = self.inode(ino)?;
        let meta = inode.fd.metadata().map_err(errno)?;
        Ok(FileAttr {
            ino,
            size: meta.size().max(inode.dirty.end()),
            blocks: meta.blocks(),
            atime: system_time(meta.atime(), meta.atime_nsec()),
            mtime: system_time(meta.mtime(), meta.mtime_nsec()),
            ctime: system_time(meta.ctime(), meta.ctime_nsec()),
            crtime: system_time(meta.ctime(), meta.ctime_nsec()),
            kind: kind_of(meta.file_type()),
            perm: u16::try_from(meta.mode() & 0o7777).unwrap_or(0),
            nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: u32::try_from(meta.rdev()).unwrap_or(0),
            blksize: u32::try_from(meta.blksize()).unwrap_or(4096),
            flags: 0,
        })
    }

    /// The entry `name` in `parent`: known inodes get one more lookup, new ones are added.
    fn lookup(&mut self, parent: INodeNo, name: &OsStr) -> Res<FileAttr> {
        let fd = rustix::fs::openat(&self.inode(parent)?.fd, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .map_err(errno)?;
        let fd = File::from(fd);
        let meta = fd.metadata().map_err(errno)?;
        let key = (meta.dev(), meta.ino());
        let ino = match self.by_key.get(&key) {
            Some(&ino) => ino,
            None => {
                let ino = self.next_ino;
                self.next_ino += 1;
                self.inodes.insert(ino, Inode { fd, key, nlookup: 0, opens: 0, dirty: Extents::default() });
                self.by_key.insert(key, ino);
                ino
            }
        };
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.nlookup += 1;
        }
        self.attr(INodeNo(ino))
    }

    /// Drops an inode nothing refers to, unless it holds unsynced data of a linked file.
    fn maybe_evict(&mut self, ino: u64) {
        let Some(inode) = self.inodes.get(&ino) else { return };
        if ino == INodeNo::ROOT.0 || inode.nlookup > 0 || inode.opens > 0 {
            return;
        }
        let linked = inode.fd.metadata().map(|m| m.nlink() > 0).unwrap_or(false);
        if inode.dirty.is_empty() || !linked {
            let key = inode.key;
            self.inodes.remove(&ino);
            self.by_key.remove(&key);
        }
    }

    fn forget(&mut self, ino: INodeNo, n: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino.0) {
            inode.nlookup = inode.nlookup.saturating_sub(n);
            self.maybe_evict(ino.0);
        }
    }

    /// Opens the backing file of `ino` for real (`O_PATH` descriptors cannot read or write).
    fn reopen(&self, ino: INodeNo, flags: OFlags) -> Res<File> {
        let path = proc_path(&self.inode(ino)?.fd);
        Ok(File::from(rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty()).map_err(errno)?))
    }

    /// A writable descriptor of `ino`: the handle's when it is writable, else a new one.
    fn writer(&self, ino: INodeNo, fh: Option<FileHandle>) -> Res<File> {
        if let Some(file) = fh.and_then(|fh| self.handles.get(&fh.0)).filter(|h| h.writable).and_then(|h| h.file.as_ref()) {
            return file.try_clone().map_err(errno);
        }
        self.reopen(ino, OFlags::WRONLY)
    }

    fn truncate(&mut self, ino: INodeNo, size: u64, fh: Option<FileHandle>) -> Res<()> {
        let file = self.writer(ino, fh)?;
        self.inode_mut(ino)?.dirty.truncate(size);
        file.set_len(size).map_err(errno)
    }

    fn logical_size(&self, ino: INodeNo) -> Res<u64> {
        let inode = self.inode(ino)?;
        Ok(inode.fd.metadata().map_err(errno)?.size().max(inode.dirty.end()))
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &mut self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Res<FileAttr> {
        if let Some(mode) = mode {
            let path = proc_path(&self.inode(ino)?.fd);
            rustix::fs::chmodat(CWD, path, Mode::from_raw_mode(mode & 0o7777), AtFlags::empty()).map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            rustix::fs::chownat(
                &self.inode(ino)?.fd,
                "",
                uid.map(rustix::fs::Uid::from_raw),
                gid.map(rustix::fs::Gid::from_raw),
                AtFlags::EMPTY_PATH,
            )
            .map_err(errno)?;
        }
        if let Some(size) = size {
            self.truncate(ino, size, fh)?;
        }
        if atime.is_some() || mtime.is_some() {
            let path = proc_path(&self.inode(ino)?.fd);
            let times = rustix::fs::Timestamps { last_access: timespec(atime), last_modification: timespec(mtime) };
            rustix::fs::utimensat(CWD, path, &times, AtFlags::empty()).map_err(errno)?;
        }
        self.attr(ino)
    }

    /// Sets the permissions the caller asked for when the daemon's umask took some away.
    fn fix_mode(&self, attr: &FileAttr, mode: u32, umask: u32) -> Res<()> {
        let want = mode & !umask & 0o7777;
        if u32::from(attr.perm) != want && attr.kind != FileType::Symlink {
            let path = proc_path(&self.inode(attr.ino)?.fd);
            rustix::fs::chmodat(CWD, path, Mode::from_raw_mode(want), AtFlags::empty()).map_err(errno)?;
        }
        Ok(())
    }

    fn new_handle(&mut self, handle: Handle) -> FileHandle {
        let fh = self.next_fh;
        self.next_fh += 1;
        if let Some(inode) = self.inodes.get_mut(&handle.ino) {
            inode.opens += 1;
        }
        self.handles.insert(fh, handle);
        FileHandle(fh)
    }

    fn release(&mut self, fh: FileHandle) {
        if let Some(handle) = self.handles.remove(&fh.0) {
            if let Some(inode) = self.inodes.get_mut(&handle.ino) {
                inode.opens = inode.opens.saturating_sub(1);
            }
            self.maybe_evict(handle.ino);
        }
    }

    /// The flags for the backing descriptor: the access mode only. Appends, syncs and
    /// truncation are done by the daemon; O_DIRECT would need aligned buffers.
    fn backing_flags(flags: i32) -> (OFlags, bool, bool) {
        let acc = OpenFlags(flags).acc_mode();
        let (oflags, writable) = match acc {
            OpenAccMode::O_RDONLY => (OFlags::RDONLY, false),
            OpenAccMode::O_WRONLY => (OFlags::WRONLY, true),
            OpenAccMode::O_RDWR => (OFlags::RDWR, true),
        };
        (oflags, writable, flags & libc::O_APPEND != 0)
    }

    fn open(&mut self, ino: INodeNo, flags: i32) -> Res<FileHandle> {
        let (oflags, writable, append) = Self::backing_flags(flags);
        let file = self.reopen(ino, oflags)?;
        let fh = self.new_handle(Handle { ino: ino.0, file: Some(file), writable, append, entries: Vec::new() });
        if flags & libc::O_TRUNC != 0 && writable {
            if let Err(e) = self.truncate(ino, 0, Some(fh)) {
                self.release(fh);
                return Err(e);
            }
        }
        Ok(fh)
    }

    fn create(&mut self, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32) -> Res<(FileAttr, FileHandle)> {
        let (oflags, writable, append) = Self::backing_flags(flags);
        let excl = if flags & libc::O_EXCL != 0 { OFlags::EXCL } else { OFlags::empty() };
        let fd = rustix::fs::openat(
            &self.inode(parent)?.fd,
            name,
            oflags | OFlags::CREATE | excl | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & !umask & 0o7777),
        )
        .map_err(errno)?;
        let file = File::from(fd);
        let attr = self.lookup(parent, name)?;
        self.fix_mode(&attr, mode, umask)?;
        let fh = self.new_handle(Handle { ino: attr.ino.0, file: Some(file), writable, append, entries: Vec::new() });
        if flags & libc::O_TRUNC != 0 && writable {
            self.truncate(attr.ino, 0, Some(fh))?;
        }
        Ok((self.attr(attr.ino)?, fh))
    }

    fn read(&self, ino: INodeNo, fh: FileHandle, off: u64, size: u32) -> Res<Vec<u8>> {
        let size_now = self.logical_size(ino)?;
        if off >= size_now {
            return Ok(Vec::new());
        }
        let n = usize::try_from((size_now - off).min(u64::from(size))).unwrap_or(0);
        let mut buf = vec![0u8; n];
        let from_handle = match &self.handle(fh)?.file {
            Some(file) => read_full_at(file, &mut buf, off),
            None => Err(io::Error::from_raw_os_error(libc::EBADF)),
        };
        match from_handle {
            Ok(()) => {}
            // A write-only handle (or none): read through a new descriptor.
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => {
                read_full_at(&self.reopen(ino, OFlags::RDONLY)?, &mut buf, off).map_err(errno)?
            }
            Err(e) => return Err(errno(e)),
        }
        self.inode(ino)?.dirty.overlay(off, &mut buf);
        Ok(buf)
    }

    fn write(&mut self, ino: INodeNo, fh: FileHandle, off: u64, data: &[u8], flags: i32) -> Res<u32> {
        let len = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        let append = self.handle(fh)?.append;
        let off = if append { self.logical_size(ino)? } else { off };
        if flags & libc::O_DSYNC != 0 {
            // O_SYNC includes the O_DSYNC bit: write through, then make it durable.
            let file = self.writer(ino, Some(fh))?;
            file.write_all_at(data, off).map_err(errno)?;
            if flags & libc::O_SYNC == libc::O_SYNC { file.sync_all() } else { file.sync_data() }.map_err(errno)?;
            self.inode_mut(ino)?.dirty.remove_range(off, end_of(off, data));
            self.stats.sync_writes += 1;
            self.stats.synced_bytes += u64::from(len);
        } else {
            self.inode_mut(ino)?.dirty.write(off, data);
            self.stats.buffered_writes += 1;
        }
        Ok(len)
    }

    fn fsync(&mut self, ino: INodeNo, fh: FileHandle, datasync: bool) -> Res<()> {
        self.check_power()?;
        self.stats.fsyncs += 1;
        if self.inode(ino)?.dirty.is_empty() {
            return Ok(());
        }
        let file = self.writer(ino, Some(fh))?;
        let inode = self.inode_mut(ino)?;
        for (start, data) in &inode.dirty.map {
            file.write_all_at(data, *start).map_err(errno)?;
        }
        if datasync { file.sync_data() } else { file.sync_all() }.map_err(errno)?;
        let bytes = inode.dirty.clear();
        self.stats.synced_bytes += bytes;
        Ok(())
    }

    fn sync_everything(&mut self) -> Res<u64> {
        self.check_power()?;
        let mut total = 0;
        let dirty: Vec<u64> = self.inodes.iter().filter(|(_, i)| !i.dirty.is_empty()).map(|(ino, _)| *ino).collect();
        for ino in dirty {
            let file = self.reopen(INodeNo(ino), OFlags::WRONLY)?;
            let inode = self.inode_mut(INodeNo(ino))?;
            for (start, data) in &inode.dirty.map {
                file.write_all_at(data, *start).map_err(errno)?;
            }
            file.sync_data().map_err(errno)?;
            total += inode.dirty.clear();
        }
        self.stats.synced_bytes += total;
        Ok(total)
    }

    fn opendir(&mut self, ino: INodeNo) -> Res<FileHandle> {
        let dir = self.inode(ino)?;
        let dev = dir.key.0;
        let mut entries = vec![(ino.0, FileType::Directory, ".".into()), (ino.0, FileType::Directory, "..".into())];
        for entry in std::fs::read_dir(proc_path(&dir.fd)).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let kind = entry.file_type().map(kind_of).map_err(errno)?;
            let ino = self.by_key.get(&(dev, entry.ino())).copied().unwrap_or(entry.ino());
            entries.push((ino, kind, entry.file_name()));
        }
        Ok(self.new_handle(Handle { ino: ino.0, file: None, writable: false, append: false, entries }))
    }

    fn fallocate(&mut self, ino: INodeNo, fh: FileHandle, off: u64, len: u64, mode: i32) -> Res<()> {
        let mode = u32::try_from(mode).map_err(|_| Errno::EINVAL)?;
        let flags = rustix::fs::FallocateFlags::from_bits_retain(mode);
        if !(flags.is_empty() || flags == rustix::fs::FallocateFlags::KEEP_SIZE) {
            return Err(Errno::EOPNOTSUPP);
        }
        let file = self.writer(ino, Some(fh))?;
        rustix::fs::fallocate(&file, flags, off, len).map_err(errno)
    }
}

/// The filesystem fuser calls; all state is behind the mutex.
struct Daemon {
    state: Arc<Mutex<State>>,
}

impl Daemon {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn entry(&self, reply: ReplyEntry, result: Res<FileAttr>) {
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn empty(reply: ReplyEmpty, result: Res<()>) {
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for Daemon {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.state().lookup(parent, name);
        self.entry(reply, result);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.state().forget(ino, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.state().setattr(ino, mode, uid, gid, size, atime, mtime, fh) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let state = self.state();
        let result = state.inode(ino).and_then(|i| rustix::fs::readlinkat(&i.fd, "", Vec::new()).map_err(errno));
        match result {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let mut state = self.state();
        let result = state
            .inode(parent)
            .and_then(|p| {
                rustix::fs::mknodat(
                    &p.fd,
                    name,
                    rustix::fs::FileType::from_raw_mode(mode),
                    Mode::from_raw_mode(mode & !umask & 0o7777),
                    u64::from(rdev),
                )
                .map_err(errno)
            })
            .and_then(|()| state.lookup(parent, name))
            .and_then(|attr| state.fix_mode(&attr, mode, umask).map(|()| attr));
        drop(state);
        self.entry(reply, result);
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let mut state = self.state();
        let result = state
            .inode(parent)
            .and_then(|p| rustix::fs::mkdirat(&p.fd, name, Mode::from_raw_mode(mode & !umask & 0o7777)).map_err(errno))
            .and_then(|()| state.lookup(parent, name))
            .and_then(|attr| state.fix_mode(&attr, mode, umask).map(|()| attr));
        drop(state);
        self.entry(reply, result);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.state().inode(parent).and_then(|p| rustix::fs::unlinkat(&p.fd, name, AtFlags::empty()).map_err(errno));
        Self::empty(reply, result);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.state().inode(parent).and_then(|p| rustix::fs::unlinkat(&p.fd, name, AtFlags::REMOVEDIR).map_err(errno));
        Self::empty(reply, result);
    }

    fn symlink(&self, _req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let mut state = self.state();
        let result = state
            .inode(parent)
            .and_then(|p| rustix::fs::symlinkat(target, &p.fd, link_name).map_err(errno))
            .and_then(|()| state.lookup(parent, link_name));
        drop(state);
        self.entry(reply, result);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let state = self.state();
        let result = state.inode(parent).and_then(|p| {
            let np = state.inode(newparent)?;
            let flags = rustix::fs::RenameFlags::from_bits_retain(flags.bits());
            rustix::fs::renameat_with(&p.fd, name, &np.fd, newname, flags).map_err(errno)
        });
        drop(state);
        Self::empty(reply, result);
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let mut state = self.state();
        let result = state
            .inode(ino)
            .and_then(|i| {
                let np = state.inode(newparent)?;
                rustix::fs::linkat(CWD, proc_path(&i.fd), &np.fd, newname, AtFlags::SYMLINK_FOLLOW).map_err(errno)
            })
            .and_then(|()| state.lookup(newparent, newname));
        drop(state);
        self.entry(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.state().open(ino, flags.0) {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.state().read(ino, fh, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.state().write(ino, fh, offset, data, flags.0) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    /// `close(2)`: not a sync, the dirty data stays.
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        Self::empty(reply, self.state().check_power());
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state().release(fh);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        Self::empty(reply, self.state().fsync(ino, fh, datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.state().opendir(ino) {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let state = self.state();
        match state.handle(fh) {
            Ok(handle) => {
                let skip = usize::try_from(offset).unwrap_or(usize::MAX);
                for (i, (ino, kind, name)) in handle.entries.iter().enumerate().skip(skip) {
                    if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.state().release(fh);
        reply.ok();
    }

    /// Directory changes are in the backing folder already.
    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let mut state = self.state();
        let result = state.check_power();
        if result.is_ok() {
            state.stats.dir_fsyncs += 1;
        }
        drop(state);
        Self::empty(reply, result);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let state = self.state();
        let result = state.inode(INodeNo::ROOT).and_then(|root| rustix::fs::fstatvfs(root.fd.as_fd()).map_err(errno));
        match result {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                u32::try_from(s.f_bsize).unwrap_or(4096),
                u32::try_from(s.f_namemax).unwrap_or(255),
                u32::try_from(s.f_frsize).unwrap_or(4096),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        Self::empty(reply, self.state().check_power());
    }

    fn create(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        match self.state().create(parent, name, mode, umask, flags) {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
        Self::empty(reply, self.state().fallocate(ino, fh, offset, length, mode));
    }
}

#[cfg(test)]
mod tests {
    use super::Extents;

    fn flat(e: &Extents, len: usize) -> Vec<u8> {
        let mut buf = vec![b'.'; len];
        e.overlay(0, &mut buf);
        buf
    }

    #[test]
    fn extents_merge_overwrite_and_trim() {
        let mut e = Extents::default();
        e.write(2, b"abc");
        e.write(5, b"de"); // touches: merged
        assert_eq!(e.map.len(), 1);
        e.write(10, b"xy");
        e.write(0, b"0123456789AB"); // covers all
        assert_eq!(e.map.len(), 1);
        assert_eq!(flat(&e, 14), b"0123456789AB..".to_vec());
        e.write(20, b"zz");
        e.write(11, b"QRSTUVWXYZ"); // joins the tail and reaches the extent at 20
        assert_eq!(flat(&e, 23), b"0123456789AQRSTUVWXYZz.".to_vec());
        assert_eq!(e.bytes, 22);
        e.remove_range(3, 5);
        assert_eq!(flat(&e, 23), b"012..56789AQRSTUVWXYZz.".to_vec());
        assert_eq!(e.bytes, 20);
        e.truncate(8);
        assert_eq!(flat(&e, 10), b"012..567..".to_vec());
        assert_eq!(e.end(), 8);
        let mut part = vec![b'.'; 4];
        e.overlay(4, &mut part);
        assert_eq!(part, b".567".to_vec());
        assert_eq!(e.clear(), 6);
        assert!(e.is_empty());
    }
}
