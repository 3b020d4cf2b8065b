//! The resolver as a real process: each test has its own state folder, its
//! own 127.a.b.0/24 and ports, and a fake upstream resolver on loopback.

#![allow(clippy::unwrap_used)]

use hako_net::dns::{
    self, DnsNetwork, DnsRecord, ensure_running, read_network, remove_network, running_pid,
    write_network, write_upstream,
};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hako-dns");

fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// A /24 of loopback addresses of the test's own: 127.a.b.0.
#[derive(Clone, Copy)]
struct Subnet([u8; 2]);

impl Subnet {
    fn new() -> Subnet {
        let r = random().to_le_bytes();
        Subnet([20 + r[0] % 230, 1 + r[1] % 250])
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.0[0], self.0[1], host)
    }

    /// `host`:port, where the port is free for both UDP and TCP.
    fn listen(&self, host: u8) -> SocketAddr {
        let ip = self.ip(host);
        loop {
            let udp = UdpSocket::bind((ip, 0)).unwrap();
            let port = udp.local_addr().unwrap().port();
            if TcpListener::bind((ip, port)).is_ok() {
                return SocketAddr::from((ip, port));
            }
        }
    }

    fn arpa(&self, host: u8) -> String {
        format!("{host}.{}.{}.127.in-addr.arpa", self.0[1], self.0[0])
    }
}

// --- a tiny DNS client --------------------------------------------------

const A: u16 = 1;
const PTR: u16 = 12;
const MX: u16 = 15;
const AAAA: u16 = 28;

fn push_name(m: &mut Vec<u8>, name: &str) {
    for label in name.trim_end_matches('.').split('.') {
        m.push(u8::try_from(label.len()).unwrap());
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
}

fn build_query(id: u16, name: &str, qtype: u16, rd: bool) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[if rd { 1 } else { 0 }, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    push_name(&mut m, name);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

fn be16(m: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([m[at], m[at + 1]])
}

/// Reads a (possibly compressed) name; returns it and where it ends.
fn read_name(m: &[u8], mut at: usize) -> (String, usize) {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let len = m[at];
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xc0 == 0xc0 {
            end.get_or_insert(at + 2);
            at = usize::from(be16(m, at) & 0x3fff);
            continue;
        }
        let len = usize::from(len);
        labels.push(String::from_utf8_lossy(&m[at + 1..at + 1 + len]).into_owned());
        at += 1 + len;
    }
    (labels.join("."), end.unwrap_or(at))
}

#[derive(Debug)]
struct Response {
    id: u16,
    flags: u16,
    rcode: u16,
    question: Option<(String, u16)>,
    a: Vec<Ipv4Addr>,
    ptr: Vec<String>,
    answers: usize,
}

fn parse_response(m: &[u8]) -> Response {
    let flags = be16(m, 2);
    let qd = be16(m, 4);
    let an = usize::from(be16(m, 6));
    let mut at = 12;
    let mut question = None;
    if qd == 1 {
        let (name, end) = read_name(m, at);
        question = Some((name, be16(m, end)));
        at = end + 4;
    }
    let (mut a, mut ptr) = (Vec::new(), Vec::new());
    for _ in 0..an {
        let (_, end) = read_name(m, at);
        let rtype = be16(m, end);
        let rdlen = usize::from(be16(m, end + 8));
        let rdata = end + 10;
        match rtype {
            A => a.push(Ipv4Addr::new(
                m[rdata],
                m[rdata + 1],
                m[rdata + 2],
                m[rdata + 3],
            )),
            PTR => ptr.push(read_name(m, rdata).0),
            _ => {}
        }
        at = rdata + rdlen;
    }
    Response {
        id: be16(m, 0),
        flags,
        rcode: flags & 0xf,
        question,
        a,
        ptr,
        answers: an,
    }
}

fn udp_exchange(from: Ipv4Addr, to: SocketAddr, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind((from, 0)).unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.send_to(msg, to).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, src)) if src == to => return Some(buf[..n].to_vec()),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Like a stub resolver: asks again every 200 ms until an answer comes.
fn udp_exchange_retrying(from: Ipv4Addr, to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    for _ in 0..25 {
        if let Some(r) = udp_exchange(from, to, msg, Duration::from_millis(200)) {
            return r;
        }
    }
    panic!("no answer from {to}");
}

fn udp_query(from: Ipv4Addr, to: SocketAddr, id: u16, name: &str, qtype: u16) -> Response {
    let msg = build_query(id, name, qtype, true);
    let reply = udp_exchange(from, to, &msg, Duration::from_secs(6))
        .unwrap_or_else(|| panic!("no answer from {to} for {name}"));
    let r = parse_response(&reply);
    assert_eq!(r.id, id, "{name}: the client's id comes back");
    assert_eq!(
        r.question,
        Some((name.to_string(), qtype)),
        "{name}: the question is echoed"
    );
    assert_ne!(r.flags & 0x8000, 0, "QR");
    assert_ne!(r.flags & 0x0080, 0, "RA");
    assert_ne!(r.flags & 0x0100, 0, "RD copied");
    r
}

fn tcp_connect(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(from, 0)),
    )
    .unwrap();
    connect(fd.as_raw_fd(), &SockaddrIn::from(to)).unwrap();
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    s
}

fn tcp_query(from: Ipv4Addr, to: SocketAddr, id: u16, name: &str, qtype: u16) -> Response {
    let mut s = tcp_connect(from, to);
    let msg = build_query(id, name, qtype, true);
    let mut frame = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(&msg);
    s.write_all(&frame).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut reply).unwrap();
    let r = parse_response(&reply);
    assert_eq!(r.id, id);
    assert_eq!(r.question, Some((name.to_string(), qtype)));
    r
}

// --- a fake upstream ----------------------------------------------------

const OUTSIDE: &str = "outside.example";
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// What the upstream got: the id, the name, and over what.
type Seen = (u16, String, &'static str);

/// Answers `outside.example` A with 192.0.2.7 and anything else with
/// NXDOMAIN, over UDP and TCP on the same port, and notes what it got.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A query's name (no compression) and where it ends; None if malformed.
fn query_name(m: &[u8]) -> Option<(String, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*m.get(at)?);
        if len == 0 {
            return Some((labels.join("."), at + 1));
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(m.get(at + 1..at + 1 + len)?).into_owned());
        at += 1 + len;
    }
}

fn answer(query: &[u8]) -> Option<(Vec<u8>, u16, String)> {
    let (name, end) = query_name(query)?;
    if query.len() < end + 4 || query[2] & 0x80 != 0 {
        return None;
    }
    let qtype = be16(query, end);
    let mut r = query[..end + 4].to_vec();
    let found = name.eq_ignore_ascii_case(OUTSIDE) && qtype == A;
    r[2] = 0x80 | (query[2] & 0x01);
    r[3] = if found { 0x80 } else { 0x83 };
    r[4..12].copy_from_slice(&[0, 1, 0, u8::from(found), 0, 0, 0, 0]);
    if found {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&OUTSIDE_IP.octets());
    }
    Some((r, be16(query, 0), name))
}

impl Upstream {
    fn start() -> Upstream {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let (seen1, stop1) = (seen.clone(), stop.clone());
        let t1 = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop1.load(Ordering::Relaxed) {
                let Ok((n, src)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((r, id, name)) = answer(&buf[..n]) {
                    seen1.lock().unwrap().push((id, name, "udp"));
                    udp.send_to(&r, src).unwrap();
                }
            }
        });
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let t2 = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut q = vec![0; usize::from(u16::from_be_bytes(len))];
                if s.read_exact(&mut q).is_err() {
                    continue;
                }
                if let Some((r, id, name)) = answer(&q) {
                    seen2.lock().unwrap().push((id, name, "tcp"));
                    let mut frame = u16::try_from(r.len()).unwrap().to_be_bytes().to_vec();
                    frame.extend_from_slice(&r);
                    let _ = s.write_all(&frame);
                }
            }
        });
        Upstream {
            addr,
            seen,
            stop,
            threads: vec![t1, t2],
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// --- the resolver under test ---------------------------------------------

/// A state folder with its resolver; dropping it removes the networks (so
/// the resolver exits) and, should one still run, kills it.
struct Setup {
    dir: tempfile::TempDir,
    upstream: Upstream,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let upstream = Upstream::start();
        write_upstream(dir.path(), &[upstream.addr]).unwrap();
        Setup { dir, upstream }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn put(&self, net: &DnsNetwork) {
        write_network(self.path(), net).unwrap();
        ensure_running(self.path(), Path::new(BIN)).unwrap();
    }

    fn pid(&self) -> u32 {
        running_pid(self.path()).expect("a resolver runs")
    }

    /// Removes every network, then checks the resolver is gone.
    fn finish(&self) {
        let pid = self.pid();
        for name in network_names(self.path()) {
            remove_network(self.path(), &name).unwrap();
        }
        assert!(!alive(pid), "the resolver {pid} has exited");
        assert_eq!(running_pid(self.path()), None);
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Ok(log) = std::fs::read_to_string(self.path().join("hako-dns.log"))
            && !log.is_empty()
        {
            eprintln!("the resolver's log:\n{log}");
        }
        for name in network_names(self.path()) {
            let _ = remove_network(self.path(), &name);
        }
        if let Some(pid) = running_pid(self.path()) {
            eprintln!("the resolver {pid} was left running: killing it");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn network_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("networks")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json")
                .filter(|_| !name.starts_with('.'))
                .map(str::to_string)
        })
        .collect()
}

/// A process that runs (a zombie has exited).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..].trim_start().as_bytes()[0];
            state != b'Z' && state != b'X'
        }
        Err(_) => false,
    }
}

/// Running processes whose command line is `hako-dns <dir>`.
fn resolvers_for(dir: &Path) -> Vec<u32> {
    let want = format!("{BIN}\0{}\0", dir.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
                && alive(*pid)
        })
        .collect()
}

fn record(container: &str, names: &[&str], ip: Ipv4Addr) -> DnsRecord {
    DnsRecord {
        container: container.into(),
        names: names.iter().map(|n| n.to_string()).collect(),
        ip,
    }
}

fn network(name: &str, listen: SocketAddr, internal: bool, records: Vec<DnsRecord>) -> DnsNetwork {
    DnsNetwork {
        name: name.into(),
        listen,
        internal,
        records,
    }
}

// --- the tests -------------------------------------------------------------

#[test]
fn files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = Subnet::new();
    let net = network(
        "front",
        s.listen(1),
        true,
        vec![record("c1", &["web"], s.ip(10))],
    );
    assert_eq!(read_network(dir.path(), "front").unwrap(), None);
    write_network(dir.path(), &net).unwrap();
    assert_eq!(
        read_network(dir.path(), "front").unwrap(),
        Some(net.clone())
    );
    for bad in ["", "../x", ".hidden", "a/b"] {
        assert!(matches!(
            write_network(dir.path(), &network(bad, s.listen(1), false, vec![])),
            Err(dns::Error::InvalidName(_))
        ));
    }
    // Nothing left behind but the file itself.
    let files: Vec<_> = std::fs::read_dir(dir.path().join("networks"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
    remove_network(dir.path(), "front").unwrap();
    remove_network(dir.path(), "front").unwrap();
    assert_eq!(read_network(dir.path(), "front").unwrap(), None);
}

#[test]
fn nothing_runs_without_networks() {
    let dir = tempfile::tempdir().unwrap();
    ensure_running(dir.path(), Path::new(BIN)).unwrap();
    assert_eq!(running_pid(dir.path()), None);
    assert!(resolvers_for(dir.path()).is_empty());
}

#[test]
fn answers_names_aliases_short_ids_and_ptr() {
    let t = Setup::new();
    let s = Subnet::new();
    let listen = s.listen(1);
    let (web, db) = (s.ip(10), s.ip(11));
    t.put(&network(
        "front",
        listen,
        false,
        vec![
            record(
                "0123456789abcdef",
                &["web", "Web-Alias.", "0123456789ab"],
                web,
            ),
            record("fedcba9876543210", &["db"], db),
        ],
    ));

    for name in ["web", "WEB", "web-alias", "Web-Alias", "0123456789ab"] {
        let r = udp_query(web, listen, 0x1111, name, A);
        assert_eq!(r.rcode, 0, "{name}");
        assert_eq!(r.a, vec![web], "{name}");
        assert_ne!(r.flags & 0x0400, 0, "{name}: authoritative");
    }
    // From a container and from an address no record has.
    assert_eq!(udp_query(web, listen, 2, "db", A).a, vec![db]);
    assert_eq!(udp_query(s.ip(99), listen, 3, "db", A).a, vec![db]);

    // Known names have no other types: NODATA.
    for qtype in [AAAA, MX] {
        let r = udp_query(web, listen, 4, "db", qtype);
        assert_eq!((r.rcode, r.answers), (0, 0));
    }

    // PTR: the first name.
    let r = udp_query(db, listen, 5, &s.arpa(10), PTR);
    assert_eq!((r.rcode, r.ptr.clone()), (0, vec!["web".to_string()]));

    // RD is copied, not set.
    let reply = udp_exchange(
        web,
        listen,
        &build_query(6, "web", A, false),
        Duration::from_secs(5),
    )
    .unwrap();
    let r = parse_response(&reply);
    assert_eq!(r.flags & 0x0100, 0);
    assert_eq!(r.a, vec![web]);

    // TCP.
    let r = tcp_query(db, listen, 7, "web", A);
    assert_eq!(r.a, vec![web]);
    let r = tcp_query(db, listen, 8, "0123456789AB", AAAA);
    assert_eq!((r.rcode, r.answers), (0, 0));

    assert!(
        t.upstream.seen().is_empty(),
        "nothing was forwarded: {:?}",
        t.upstream.seen()
    );
    t.finish();
}

#[test]
fn forwards_other_names_upstream() {
    let t = Setup::new();
    let s = Subnet::new();
    let listen = s.listen(1);
    t.put(&network(
        "front",
        listen,
        false,
        vec![record("c1", &["web"], s.ip(10))],
    ));

    let r = udp_query(s.ip(10), listen, 0xbeef, OUTSIDE, A);
    assert_eq!((r.rcode, r.a), (0, vec![OUTSIDE_IP]));
    let r = udp_query(s.ip(10), listen, 0x0102, "nothing.example", A);
    assert_eq!((r.rcode, r.answers), (3, 0), "NXDOMAIN relayed");
    // A PTR for an address no container has goes upstream too.
    let r = udp_query(s.ip(10), listen, 0x0103, &s.arpa(77), PTR);
    assert_eq!(r.rcode, 3);

    // Clients with the same id at the same time each get their answer.
    let clients: Vec<_> = (20..28)
        .map(|host| {
            let ip = s.ip(host);
            std::thread::spawn(move || udp_query(ip, listen, 0x4242, OUTSIDE, A))
        })
        .collect();
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!((r.id, r.a), (0x4242, vec![OUTSIDE_IP]));
    }

    // Over TCP, forwarded over TCP.
    let r = tcp_query(s.ip(10), listen, 0x7777, OUTSIDE, A);
    assert_eq!(r.a, vec![OUTSIDE_IP]);

    let seen = t.upstream.seen();
    let udp: Vec<_> = seen
        .iter()
        .filter(|(_, n, via)| n == OUTSIDE && *via == "udp")
        .collect();
    assert_eq!(udp.len(), 9, "{seen:?}");
    let mut ids: Vec<u16> = udp.iter().map(|(id, _, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 9, "the upstream saw distinct ids: {seen:?}");
    assert!(
        seen.iter()
            .any(|(id, n, via)| *id == 0x7777 && n == OUTSIDE && *via == "tcp")
    );
    assert!(seen.iter().any(|(_, n, _)| n == "nothing.example"));
    assert!(!seen.iter().any(|(_, n, _)| n == "web"));
    t.finish();
}

#[test]
fn next_upstream_after_a_timeout_then_servfail() {
    let t = Setup::new();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    write_upstream(t.path(), &[silent.local_addr().unwrap(), t.upstream.addr]).unwrap();
    let s = Subnet::new();
    let listen = s.listen(1);
    t.put(&network("front", listen, false, vec![]));

    let started = Instant::now();
    let r = udp_query(s.ip(10), listen, 1, OUTSIDE, A);
    assert_eq!(r.a, vec![OUTSIDE_IP]);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    write_upstream(t.path(), &[silent.local_addr().unwrap()]).unwrap();
    let started = Instant::now();
    let r = udp_query(s.ip(10), listen, 2, OUTSIDE, A);
    assert_eq!((r.rcode, r.answers), (2, 0), "SERVFAIL");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(t.upstream.seen().len(), 1);
    t.finish();
}

#[test]
fn names_of_every_network_the_requester_is_on() {
    let t = Setup::new();
    let s = Subnet::new();
    let (l1, l2) = (s.listen(1), s.listen(2));
    // "both" is on the two networks; "one" on the first; "two" on the second.
    let (both1, both2, one, two) = (s.ip(10), s.ip(20), s.ip(11), s.ip(21));
    t.put(&network(
        "n1",
        l1,
        false,
        vec![record("cb", &["both"], both1), record("c1", &["one"], one)],
    ));
    t.put(&network(
        "n2",
        l2,
        false,
        vec![record("cb", &["both"], both2), record("c2", &["two"], two)],
    ));

    // Each network answers its own names, with its own address for "both".
    assert_eq!(udp_query(one, l1, 1, "both", A).a, vec![both1]);
    assert_eq!(udp_query(two, l2, 2, "both", A).a, vec![both2]);
    // "both" sees the two networks, from either; its own network first.
    assert_eq!(udp_query(both1, l1, 3, "two", A).a, vec![two]);
    assert_eq!(udp_query(both2, l2, 4, "one", A).a, vec![one]);
    assert_eq!(tcp_query(both1, l1, 5, "two", A).a, vec![two]);
    assert_eq!(
        udp_query(both2, l2, 6, &s.arpa(11), PTR).ptr,
        vec!["one".to_string()]
    );
    // The others do not see across: the name goes upstream, which knows
    // nothing of it.
    let r = udp_query(one, l1, 7, "two", A);
    assert_eq!((r.rcode, r.answers), (3, 0));
    let r = udp_query(two, l2, 8, "one", A);
    assert_eq!((r.rcode, r.answers), (3, 0));
    let r = udp_query(s.ip(99), l1, 9, "two", A);
    assert_eq!((r.rcode, r.answers), (3, 0));
    let names: Vec<String> = t.upstream.seen().into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(names, ["two", "one", "two"]);

    let pid = t.pid();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    for line in rollup
        .lines()
        .filter(|l| l.starts_with("Rss:") || l.starts_with("Pss:"))
    {
        eprintln!("resolver serving 2 networks: {line}");
    }
    t.finish();
}

#[test]
fn records_and_addresses_follow_the_files() {
    let t = Setup::new();
    let s = Subnet::new();
    let listen = s.listen(1);
    let client = s.ip(50);
    let mut net = network(
        "front",
        listen,
        false,
        vec![record("c1", &["web"], s.ip(10))],
    );
    t.put(&net);
    let pid = t.pid();
    assert_eq!(udp_query(client, listen, 1, "web", A).a, vec![s.ip(10)]);

    // A new container, a moved one.
    net.records = vec![
        record("c1", &["web"], s.ip(12)),
        record("c2", &["cache"], s.ip(13)),
    ];
    t.put(&net);
    assert_eq!(udp_query(client, listen, 2, "web", A).a, vec![s.ip(12)]);
    assert_eq!(udp_query(client, listen, 3, "cache", A).a, vec![s.ip(13)]);

    // A container gone: its name is no longer ours.
    net.records.retain(|r| r.container != "c1");
    t.put(&net);
    let r = udp_query(client, listen, 4, "web", A);
    assert_eq!((r.rcode, r.answers), (3, 0));

    // The network moves: the old address is let go, the new one answers.
    let moved = s.listen(2);
    net.listen = moved;
    t.put(&net);
    assert_eq!(udp_query(client, moved, 5, "cache", A).a, vec![s.ip(13)]);
    assert_eq!(tcp_query(client, moved, 6, "cache", A).a, vec![s.ip(13)]);
    UdpSocket::bind(listen).expect("the old address is free");
    TcpListener::bind(listen).expect("the old address is free (TCP)");

    // A file that does not parse is reported, and the last good version
    // keeps serving.
    std::fs::write(t.path().join("networks/front.json"), b"{ nope").unwrap();
    let err = ensure_running(t.path(), Path::new(BIN)).unwrap_err();
    assert!(matches!(err, dns::Error::Network { .. }), "{err}");
    assert_eq!(udp_query(client, moved, 7, "cache", A).a, vec![s.ip(13)]);
    t.put(&net);

    assert_eq!(t.pid(), pid, "one resolver all along");
    t.finish();
}

#[test]
fn internal_networks_are_not_forwarded() {
    let t = Setup::new();
    let s = Subnet::new();
    let listen = s.listen(1);
    t.put(&network(
        "back",
        listen,
        true,
        vec![record("c1", &["web"], s.ip(10))],
    ));
    assert_eq!(udp_query(s.ip(10), listen, 1, "web", A).a, vec![s.ip(10)]);
    let r = udp_query(s.ip(10), listen, 2, OUTSIDE, A);
    assert_eq!((r.rcode, r.answers), (5, 0), "REFUSED");
    let r = tcp_query(s.ip(10), listen, 3, OUTSIDE, A);
    assert_eq!((r.rcode, r.answers), (5, 0), "REFUSED over TCP");
    let r = udp_query(s.ip(10), listen, 4, &s.arpa(99), PTR);
    assert_eq!(r.rcode, 5);
    assert!(t.upstream.seen().is_empty());
    t.finish();
}

#[test]
fn malformed_packets_do_not_hurt() {
    let t = Setup::new();
    let s = Subnet::new();
    let listen = s.listen(1);
    t.put(&network(
        "front",
        listen,
        false,
        vec![record("c1", &["web"], s.ip(10))],
    ));
    let pid = t.pid();

    let junk = UdpSocket::bind((s.ip(66), 0)).unwrap();
    let mut seed = random() | 1;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..3000 {
        let len = usize::try_from(next() % 120).unwrap();
        let mut m: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
        // Half of them look like queries with one question.
        if i % 2 == 0 && m.len() >= 12 {
            m[2] &= 0x07;
            m[4..6].copy_from_slice(&[0, 1]);
        }
        junk.send_to(&m, listen).unwrap();
        // Between bursts (the socket's queue holds a few hundred), the
        // resolver still answers.
        if i % 250 == 249 {
            let r = udp_exchange_retrying(s.ip(10), listen, &build_query(1, "web", A, true));
            assert_eq!(parse_response(&r).a, vec![s.ip(10)]);
        }
    }
    let mut crafted: Vec<Vec<u8>> = vec![
        vec![],
        vec![0; 11],
        vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
        // A pointer to itself.
        [
            &[0, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0][..],
            &[0xc0, 12, 0, 1, 0, 1],
        ]
        .concat(),
        // A label longer than the message.
        [&[0, 3, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0][..], &[63, b'a', b'b']].concat(),
        // 65535 questions.
        [
            &[0, 4, 1, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0][..],
            &[1, b'a', 0, 0, 1, 0, 1],
        ]
        .concat(),
        // A name longer than 255.
        {
            let mut m = vec![0, 5, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            for _ in 0..10 {
                m.push(63);
                m.extend_from_slice(&[b'x'; 63]);
            }
            m.extend_from_slice(&[0, 0, 1, 0, 1]);
            m
        },
    ];
    // A response (QR set) for a random id: not a query, dropped.
    let mut response = build_query(0x5151, OUTSIDE, A, true);
    response[2] |= 0x80;
    crafted.push(response);
    for m in &crafted {
        junk.send_to(m, listen).unwrap();
    }

    // A few of them get the answers they should.
    let formerr = udp_exchange_retrying(s.ip(67), listen, &[0, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(parse_response(&formerr).rcode, 1, "no question: FORMERR");
    let mut update = build_query(10, "web", A, true);
    update[2] = 0x28;
    let notimp = udp_exchange_retrying(s.ip(67), listen, &update);
    assert_eq!(parse_response(&notimp).rcode, 4, "UPDATE: NOTIMP");

    // TCP: garbage, a short frame, a connection left open.
    let mut c = tcp_connect(s.ip(68), listen);
    c.write_all(&[0, 5, 1, 2, 3, 4, 5, 0, 0]).unwrap();
    drop(c);
    let mut c = tcp_connect(s.ip(68), listen);
    c.write_all(&[0xff, 0xff, 1]).unwrap();
    drop(c);
    let idle = tcp_connect(s.ip(68), listen);

    // A response from an address that is not an upstream is ignored: the
    // client still gets the real answer.
    let forged = UdpSocket::bind("127.0.0.1:0").unwrap();
    for id in 0..=255u16 {
        let mut fake = build_query(id, OUTSIDE, A, true);
        fake[2] |= 0x80;
        let _ = forged.send_to(&fake, listen);
    }
    udp_exchange_retrying(s.ip(10), listen, &build_query(1, "web", A, true));

    assert_eq!(udp_query(s.ip(10), listen, 11, "web", A).a, vec![s.ip(10)]);
    assert_eq!(
        udp_query(s.ip(10), listen, 12, OUTSIDE, A).a,
        vec![OUTSIDE_IP]
    );
    assert_eq!(tcp_query(s.ip(10), listen, 13, "web", A).a, vec![s.ip(10)]);
    assert_eq!(t.pid(), pid);
    assert!(alive(pid));
    drop(idle);
    t.finish();
}

#[test]
fn one_resolver_for_concurrent_callers() {
    let t = Setup::new();
    let s = Subnet::new();
    let listen = s.listen(1);
    write_network(
        t.path(),
        &network(
            "front",
            listen,
            false,
            vec![record("c1", &["web"], s.ip(10))],
        ),
    )
    .unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let dir: PathBuf = t.path().to_path_buf();
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (barrier, dir) = (barrier.clone(), dir.clone());
            std::thread::spawn(move || {
                barrier.wait();
                ensure_running(&dir, Path::new(BIN))
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap().unwrap();
    }
    let pid = t.pid();
    assert_eq!(resolvers_for(t.path()), vec![pid]);
    assert_eq!(udp_query(s.ip(10), listen, 1, "web", A).a, vec![s.ip(10)]);

    // Cheap when it runs.
    let started = Instant::now();
    for _ in 0..100 {
        ensure_running(t.path(), Path::new(BIN)).unwrap();
    }
    let each = started.elapsed() / 100;
    eprintln!("ensure_running with the resolver up: {each:?}");
    assert!(each < Duration::from_millis(5), "{each:?}");
    assert_eq!(t.pid(), pid);

    // A resolver that died is replaced.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    ensure_running(t.path(), Path::new(BIN)).unwrap();
    let again = t.pid();
    assert_ne!(again, pid);
    assert_eq!(resolvers_for(t.path()), vec![again]);
    assert_eq!(udp_query(s.ip(10), listen, 2, "web", A).a, vec![s.ip(10)]);
    t.finish();
    assert!(resolvers_for(t.path()).is_empty());
}

#[test]
fn exits_after_the_last_network() {
    let t = Setup::new();
    let s = Subnet::new();
    let (l1, l2) = (s.listen(1), s.listen(2));
    t.put(&network(
        "n1",
        l1,
        false,
        vec![record("c1", &["web"], s.ip(10))],
    ));
    t.put(&network(
        "n2",
        l2,
        false,
        vec![record("c2", &["db"], s.ip(20))],
    ));
    let pid = t.pid();

    remove_network(t.path(), "n1").unwrap();
    ensure_running(t.path(), Path::new(BIN)).unwrap();
    assert!(alive(pid));
    assert_eq!(t.pid(), pid);
    assert_eq!(udp_query(s.ip(20), l2, 1, "db", A).a, vec![s.ip(20)]);
    // n1's sockets are closed once the resolver has seen the removal (the
    // next ensure_running does not wait for removals: poll a little).
    let deadline = Instant::now() + Duration::from_secs(2);
    while UdpSocket::bind(l1).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    UdpSocket::bind(l1).expect("n1's address is let go");

    let started = Instant::now();
    remove_network(t.path(), "n2").unwrap();
    let took = started.elapsed();
    eprintln!("the resolver exited {took:?} after the last network went");
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert!(!alive(pid));
    assert_eq!(running_pid(t.path()), None);
    assert!(resolvers_for(t.path()).is_empty());
    UdpSocket::bind(l2).expect("n2's address is let go");
    TcpListener::bind(l2).expect("n2's TCP address is let go");

    // And a new network starts a new one.
    t.put(&network(
        "n3",
        l1,
        false,
        vec![record("c3", &["cache"], s.ip(30))],
    ));
    assert_ne!(t.pid(), pid);
    assert_eq!(udp_query(s.ip(30), l1, 2, "cache", A).a, vec![s.ip(30)]);
    t.finish();
}

#[test]
fn start_and_bind_failures_are_reported() {
    let t = Setup::new();
    let s = Subnet::new();
    let listen = s.listen(1);
    write_network(
        t.path(),
        &network(
            "front",
            listen,
            false,
            vec![record("c1", &["web"], s.ip(10))],
        ),
    )
    .unwrap();

    // A resolver that dies at once: an error, not a wait.
    let started = Instant::now();
    let err = ensure_running(t.path(), Path::new("/bin/false")).unwrap_err();
    assert!(matches!(err, dns::Error::Start { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // An address someone else holds.
    let taken = UdpSocket::bind(listen).unwrap();
    let err = ensure_running(t.path(), Path::new(BIN)).unwrap_err();
    assert!(
        matches!(&err, dns::Error::Network { network, .. } if network == "front"),
        "{err}"
    );
    drop(taken);
    // Tried again a second later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = ensure_running(t.path(), Path::new(BIN)) {
        assert!(Instant::now() < deadline, "{e}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(udp_query(s.ip(10), listen, 1, "web", A).a, vec![s.ip(10)]);
    // And at the next change.
    let taken = UdpSocket::bind(s.listen(2)).unwrap();
    let other = network("other", taken.local_addr().unwrap(), false, vec![]);
    write_network(t.path(), &other).unwrap();
    assert!(ensure_running(t.path(), Path::new(BIN)).is_err());
    drop(taken);
    let moved = s.listen(3);
    t.put(&network("other", moved, false, vec![]));
    assert_eq!(udp_query(s.ip(10), moved, 2, "web", A).rcode, 3);
    t.finish();
}
