//! SFTP (version 3, as OpenSSH speaks it) read from the client's side of
//! an `sftp` subsystem channel, so that plugins judge each file operation
//! (`on-file-operation`) before the host sees it.
//!
//! The client's data is cut into whole packets (`uint32 length, byte type,
//! uint32 id, ...`); each is read for the operation it asks for — open
//! for reading or writing, remove, rename, make or remove a directory,
//! change attributes, list a directory, and links (judged as writes of
//! the link's path). Reads and writes through an open handle were judged
//! at their `open`; metadata reads (`stat`, `realpath`, `readlink`) are
//! not operations. An extended request the gateway does not know is
//! refused: it could be anything. A refused packet never reaches the
//! host: the client gets `SSH_FXP_STATUS` "permission denied" with the
//! reason, for that request id.

/// The longest SFTP packet the gateway reads (OpenSSH's own limit is
/// 256 KiB; a longer length ends the channel).
pub const MAX_PACKET: usize = 256 * 1024 + 1024;

/// A file operation, by the path(s) it names, as the client sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    /// Open for reading.
    Read(String),
    /// Open for writing (create, truncate or append), or make a link.
    Write(String),
    /// Remove a file.
    Remove(String),
    /// Rename: from, to.
    Rename(String, String),
    /// Create a directory.
    MakeDirectory(String),
    /// Remove a directory.
    RemoveDirectory(String),
    /// Change attributes (mode, owner, times); an open file's has no path.
    SetAttributes(String),
    /// List a directory.
    ListDirectory(String),
    /// Make a link (symbolic or hard): to this path, at this path. Plugins
    /// see it as a rename from the first to the second (what the target
    /// holds becomes reachable at the link, as a rename would move it).
    Link(String, String),
}

impl FileOp {
    /// The operation in one line, for records: `write /etc/motd`.
    pub fn text(&self) -> String {
        match self {
            FileOp::Read(p) => format!("read {p}"),
            FileOp::Write(p) => format!("write {p}"),
            FileOp::Remove(p) => format!("remove {p}"),
            FileOp::Rename(a, b) => format!("rename {a} {b}"),
            FileOp::MakeDirectory(p) => format!("mkdir {p}"),
            FileOp::RemoveDirectory(p) => format!("rmdir {p}"),
            FileOp::SetAttributes(p) => format!("setstat {p}"),
            FileOp::ListDirectory(p) => format!("list {p}"),
            FileOp::Link(to, at) => format!("link {at} -> {to}"),
        }
    }
}

/// What one client packet asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Nothing to judge (init, reads and writes on a handle, metadata).
    Pass,
    /// File operations to judge (all must be allowed); the request id to
    /// answer a refusal with.
    Operations(u32, Vec<FileOp>),
    /// A request the gateway cannot read or does not know: refused.
    Unknown(u32, String),
}

/// Cuts the client's data into whole packets.
#[derive(Debug, Default)]
pub struct Packets {
    held: Vec<u8>,
}

impl Packets {
    /// Whether part of a packet is held.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }
}

/// The client sent a packet longer than [`MAX_PACKET`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong(pub usize);

impl Packets {
    /// Adds `data`; the whole packets it completes (each with its length
    /// prefix), in order. The rest waits.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, TooLong> {
        self.held.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(len) = self.held.get(..4) {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if len > MAX_PACKET {
                return Err(TooLong(len));
            }
            if self.held.len() < 4 + len {
                break;
            }
            let rest = self.held.split_off(4 + len);
            out.push(std::mem::replace(&mut self.held, rest));
        }
        Ok(out)
    }
}

/// A reader over a packet's fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u32(&mut self) -> Option<u32> {
        let bytes = self.0.get(..4)?;
        self.0 = &self.0[4..];
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        let b = self.0.get(..len)?;
        self.0 = &self.0[len..];
        Some(b)
    }
    /// A path: text (bytes that are not UTF-8 make it unreadable).
    fn path(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_string)
    }
}

const FXF_READ: u32 = 0x01;
const FXF_WRITE: u32 = 0x02;
/// READ, WRITE, APPEND, CREAT, TRUNC, EXCL: the flags version 3 defines.
const FXF_KNOWN: u32 = 0x3f;

/// The path a link's `target` names, for a link made at `link`: as given
/// when absolute, else beside the link (where the host reads it from).
fn link_target(link: &str, target: &str) -> String {
    if target.starts_with('/') {
        return target.to_string();
    }
    match link.rfind('/') {
        Some(i) => format!("{}/{target}", &link[..i]),
        None => target.to_string(),
    }
}

/// A link at `link` to `target`: what the target holds becomes reachable
/// (written, read) through the link.
fn link_ops(link: String, target: String) -> Vec<FileOp> {
    let target = link_target(&link, &target);
    vec![FileOp::Link(target.clone(), link), FileOp::Read(target)]
}

/// Reads one whole packet (length prefix included).
pub fn read(packet: &[u8]) -> Request {
    let mut f = Fields(packet.get(4..).unwrap_or_default());
    let Some(kind) = f.u8() else {
        return Request::Unknown(0, "an empty packet".into());
    };
    // SSH_FXP_INIT carries a version, not an id.
    if kind == 1 {
        return Request::Pass;
    }
    let Some(id) = f.u32() else {
        return Request::Unknown(0, format!("a packet of type {kind} without an id"));
    };
    let op = |f: &mut Fields, make: fn(String) -> FileOp| f.path().map(|p| vec![make(p)]);
    let operation = match kind {
        // OPEN: path, pflags, attrs. The host opens for reading unless
        // WRITE is set, so any open without it (or with READ) is a read;
        // any flag that changes the file makes it a write too.
        3 => f.path().and_then(|p| {
            let flags = f.u32()?;
            if flags & !FXF_KNOWN != 0 {
                return None;
            }
            let mut ops = Vec::new();
            if flags & FXF_WRITE == 0 || flags & FXF_READ != 0 {
                ops.push(FileOp::Read(p.clone()));
            }
            if flags & !FXF_READ != 0 {
                ops.push(FileOp::Write(p));
            }
            Some(ops)
        }),
        // SETSTAT: path, attrs.
        9 => op(&mut f, FileOp::SetAttributes),
        // FSETSTAT: an open file's attributes; its path is not known here
        // (an empty one, which every write rule matches).
        10 => Some(vec![FileOp::SetAttributes(String::new())]),
        11 => op(&mut f, FileOp::ListDirectory),
        13 => op(&mut f, FileOp::Remove),
        14 => op(&mut f, FileOp::MakeDirectory),
        15 => op(&mut f, FileOp::RemoveDirectory),
        // RENAME: what moves is read out of its place, too.
        18 => f.path().and_then(|a| {
            let b = f.path()?;
            Some(vec![FileOp::Rename(a.clone(), b), FileOp::Read(a)])
        }),
        // SYMLINK: OpenSSH's server reads the link's target, then the
        // link's path (symlink(target, link)).
        20 => f
            .path()
            .and_then(|target| Some(link_ops(f.path()?, target))),
        // CLOSE, READ, WRITE, LSTAT, FSTAT, READDIR, REALPATH, STAT,
        // READLINK: on a handle already judged, or metadata.
        4..=8 | 12 | 16 | 17 | 19 => return Request::Pass,
        200 => return extended(id, &mut f),
        other => return Request::Unknown(id, format!("SFTP request type {other}")),
    };
    match operation {
        Some(ops) => Request::Operations(id, ops),
        None => Request::Unknown(
            id,
            format!("an SFTP request of type {kind} the gateway cannot read"),
        ),
    }
}

/// An `SSH_FXP_EXTENDED` request by name.
fn extended(id: u32, f: &mut Fields) -> Request {
    let Some(name) = f.path() else {
        return Request::Unknown(id, "an extended SFTP request without a name".into());
    };
    let op = match name.as_str() {
        "posix-rename@openssh.com" => f.path().and_then(|a| {
            let b = f.path()?;
            Some(vec![FileOp::Rename(a.clone(), b), FileOp::Read(a)])
        }),
        // link(old, new): the new name reaches the old file.
        "hardlink@openssh.com" => f.path().and_then(|old| {
            let new = f.path()?;
            Some(vec![FileOp::Link(old.clone(), new), FileOp::Read(old)])
        }),
        "lsetstat@openssh.com" => f.path().map(|p| vec![FileOp::SetAttributes(p)]),
        // Metadata and handles already judged.
        "statvfs@openssh.com"
        | "fstatvfs@openssh.com"
        | "fsync@openssh.com"
        | "limits@openssh.com"
        | "expand-path@openssh.com"
        | "home-directory"
        | "users-groups-by-id@openssh.com"
        | "copy-data" => return Request::Pass,
        other => {
            return Request::Unknown(id, format!("the extended SFTP request {other:?}"));
        }
    };
    match op {
        Some(ops) => Request::Operations(id, ops),
        None => Request::Unknown(
            id,
            format!("the extended SFTP request {name:?}, which the gateway cannot read"),
        ),
    }
}

/// The client's `SSH_FXP_INIT` with its version lowered to 3 (the only
/// one the gateway reads: later versions lay `open` out differently);
/// `None` for any other packet.
pub fn pinned_init(packet: &[u8]) -> Option<Vec<u8>> {
    if packet.get(4) != Some(&1) || packet.len() < 9 {
        return None;
    }
    let mut pinned = packet.to_vec();
    let version = u32::from_be_bytes([packet[5], packet[6], packet[7], packet[8]]);
    if version > 3 {
        pinned[5..9].copy_from_slice(&3u32.to_be_bytes());
    }
    Some(pinned)
}

/// `SSH_FXP_STATUS` for request `id`: permission denied, with `why`.
pub fn denied(id: u32, why: &str) -> Vec<u8> {
    let message = format!("Portcullis: {why}");
    let mut body = Vec::with_capacity(message.len() + 24);
    body.push(101u8);
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(&3u32.to_be_bytes()); // SSH_FX_PERMISSION_DENIED
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message.as_bytes());
    body.extend_from_slice(&0u32.to_be_bytes()); // language tag
    let mut packet = (body.len() as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: u8, id: u32, fields: &[&[u8]], tail: &[u8]) -> Vec<u8> {
        let mut body = vec![kind];
        body.extend_from_slice(&id.to_be_bytes());
        for f in fields {
            body.extend_from_slice(&(f.len() as u32).to_be_bytes());
            body.extend_from_slice(f);
        }
        body.extend_from_slice(tail);
        let mut p = (body.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&body);
        p
    }

    #[test]
    fn operations_are_read_from_their_packets() {
        let open = |flags: u32| {
            let mut tail = flags.to_be_bytes().to_vec();
            tail.extend_from_slice(&0u32.to_be_bytes());
            read(&packet(3, 7, &[b"/etc/motd"], &tail))
        };
        let (r, w) = (
            FileOp::Read("/etc/motd".into()),
            FileOp::Write("/etc/motd".into()),
        );
        assert_eq!(open(1), Request::Operations(7, vec![r.clone()]));
        for flags in [2, 0x08 | 0x02, 0x10 | 0x02, 0x04 | 0x02] {
            assert_eq!(open(flags), Request::Operations(7, vec![w.clone()]));
        }
        // The host opens these for reading: they are reads (and writes).
        for flags in [3, 0x01 | 0x04, 0x01 | 0x08, 0x08, 0x04, 0x10] {
            assert_eq!(
                open(flags),
                Request::Operations(7, vec![r.clone(), w.clone()]),
                "{flags:#x}"
            );
        }
        assert!(matches!(open(0x01 | 0x40), Request::Unknown(7, _)));
        let rename =
            |a: &str, b: &str| vec![FileOp::Rename(a.into(), b.into()), FileOp::Read(a.into())];
        assert_eq!(
            read(&packet(18, 8, &[b"a", b"b"], &[])),
            Request::Operations(8, rename("a", "b"))
        );
        assert_eq!(
            read(&packet(13, 9, &[b"x"], &[])),
            Request::Operations(9, vec![FileOp::Remove("x".into())])
        );
        assert_eq!(
            read(&packet(
                200,
                10,
                &[b"posix-rename@openssh.com", b"a", b"b"],
                &[]
            )),
            Request::Operations(10, rename("a", "b"))
        );
        // symlink(target, link) and hardlink(old, new): the link is
        // written, what it reaches is written and read.
        let link =
            |at: &str, to: &str| vec![FileOp::Link(to.into(), at.into()), FileOp::Read(to.into())];
        assert_eq!(
            read(&packet(20, 11, &[b"/etc/shadow", b"home/s"], &[])),
            Request::Operations(11, link("home/s", "/etc/shadow"))
        );
        assert_eq!(
            read(&packet(20, 11, &[b"../etc", b"home/e"], &[])),
            Request::Operations(11, link("home/e", "home/../etc"))
        );
        assert_eq!(
            read(&packet(
                200,
                12,
                &[b"hardlink@openssh.com", b"/etc/passwd", b"p"],
                &[]
            )),
            Request::Operations(12, link("p", "/etc/passwd"))
        );
        // An open file's attributes: no path.
        assert_eq!(
            read(&packet(10, 13, &[b"handle"], &[])),
            Request::Operations(13, vec![FileOp::SetAttributes(String::new())])
        );
        // A client asking for a later version gets version 3.
        let mut init = vec![0, 0, 0, 5, 1];
        init.extend_from_slice(&6u32.to_be_bytes());
        assert_eq!(
            &pinned_init(&init).expect("init")[5..9],
            &3u32.to_be_bytes()
        );
        assert_eq!(pinned_init(&packet(13, 1, &[b"x"], &[])), None);
        assert!(matches!(
            read(&packet(200, 11, &[b"evil@example.com"], &[])),
            Request::Unknown(11, _)
        ));
        assert_eq!(read(&packet(17, 12, &[b"x"], &[])), Request::Pass);
        // A path that is not UTF-8, or a cut packet, cannot be read.
        assert!(matches!(
            read(&packet(13, 13, &[b"\xff"], &[])),
            Request::Unknown(13, _)
        ));
        assert!(matches!(
            read(&packet(18, 14, &[b"a"], &[])),
            Request::Unknown(14, _)
        ));
    }

    #[test]
    fn packets_are_cut_whole_from_any_pieces() {
        let a = packet(13, 1, &[b"one"], &[]);
        let b = packet(13, 2, &[b"two"], &[]);
        let both = [a.clone(), b.clone()].concat();
        let mut packets = Packets::default();
        assert_eq!(packets.push(&both[..3]).unwrap(), Vec::<Vec<u8>>::new());
        let cut = a.len() + 2;
        assert_eq!(packets.push(&both[3..cut]).unwrap(), vec![a]);
        assert_eq!(packets.push(&both[cut..]).unwrap(), vec![b]);
        let mut long = Packets::default();
        assert!(long.push(&(MAX_PACKET as u32 + 1).to_be_bytes()).is_err());
    }

    #[test]
    fn a_refusal_is_a_status_packet_for_its_request() {
        let p = denied(42, "no");
        assert_eq!(
            u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize,
            p.len() - 4
        );
        assert_eq!(p[4], 101);
        assert_eq!(&p[5..9], &42u32.to_be_bytes());
        assert_eq!(&p[9..13], &3u32.to_be_bytes());
    }
}
