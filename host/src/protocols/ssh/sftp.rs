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
        }
    }
}

/// What one client packet asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Nothing to judge (init, reads and writes on a handle, metadata).
    Pass,
    /// A file operation to judge; the request id to answer a refusal with.
    Operation(u32, FileOp),
    /// A request the gateway cannot read or does not know: refused.
    Unknown(u32, String),
}

/// Cuts the client's data into whole packets.
#[derive(Debug, Default)]
pub struct Packets {
    held: Vec<u8>,
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
    let op = |f: &mut Fields, make: fn(String) -> FileOp| f.path().map(make);
    let operation = match kind {
        // OPEN: path, pflags, attrs.
        3 => f.path().and_then(|p| {
            let flags = f.u32()?;
            Some(match flags & !FXF_READ {
                0 => FileOp::Read(p),
                _ => FileOp::Write(p),
            })
        }),
        // SETSTAT: path, attrs.
        9 => op(&mut f, FileOp::SetAttributes),
        // FSETSTAT: an open file's attributes.
        10 => Some(FileOp::SetAttributes("(an open file)".into())),
        11 => op(&mut f, FileOp::ListDirectory),
        13 => op(&mut f, FileOp::Remove),
        14 => op(&mut f, FileOp::MakeDirectory),
        15 => op(&mut f, FileOp::RemoveDirectory),
        18 => f.path().and_then(|a| Some(FileOp::Rename(a, f.path()?))),
        // SYMLINK: OpenSSH sends target then link path; either way the
        // link is a new file: both are judged as writes (the first).
        20 => f.path().and_then(|a| {
            let b = f.path()?;
            Some(FileOp::Write(format!("{a} -> {b}")))
        }),
        // CLOSE, READ, WRITE, LSTAT, FSTAT, READDIR, REALPATH, STAT,
        // READLINK: on a handle already judged, or metadata.
        4..=8 | 12 | 16 | 17 | 19 => return Request::Pass,
        200 => return extended(id, &mut f),
        other => return Request::Unknown(id, format!("SFTP request type {other}")),
    };
    match operation {
        Some(op) => Request::Operation(id, op),
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
        "posix-rename@openssh.com" => f.path().and_then(|a| Some(FileOp::Rename(a, f.path()?))),
        "hardlink@openssh.com" => f.path().and_then(|a| {
            let b = f.path()?;
            Some(FileOp::Write(format!("{b} -> {a}")))
        }),
        "lsetstat@openssh.com" => f.path().map(FileOp::SetAttributes),
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
        Some(op) => Request::Operation(id, op),
        None => Request::Unknown(
            id,
            format!("the extended SFTP request {name:?}, which the gateway cannot read"),
        ),
    }
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
        assert_eq!(
            open(1),
            Request::Operation(7, FileOp::Read("/etc/motd".into()))
        );
        for flags in [2, 3, 0x08 | 0x02, 0x10 | 0x02, 0x04 | 0x02] {
            assert_eq!(
                open(flags),
                Request::Operation(7, FileOp::Write("/etc/motd".into()))
            );
        }
        assert_eq!(
            read(&packet(18, 8, &[b"a", b"b"], &[])),
            Request::Operation(8, FileOp::Rename("a".into(), "b".into()))
        );
        assert_eq!(
            read(&packet(13, 9, &[b"x"], &[])),
            Request::Operation(9, FileOp::Remove("x".into()))
        );
        assert_eq!(
            read(&packet(
                200,
                10,
                &[b"posix-rename@openssh.com", b"a", b"b"],
                &[]
            )),
            Request::Operation(10, FileOp::Rename("a".into(), "b".into()))
        );
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
