//! Networking on real containers: the default bridge with published ports
//! (TCP and UDP, from the host's loopback, the host's own address and
//! other containers), user networks whose containers find each other by
//! name, alias and short id, names forwarded to a resolver on loopback,
//! isolation between networks, and nothing left behind after `rm`,
//! `network rm` or a SIGKILLed `hako`. Traffic stays on this machine.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

struct Setup {
    h: Hako,
    _reg: Registry,
    image: String,
    /// Queries the fake upstream resolver got (names).
    upstream_seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The address the fake upstream resolver gives every name.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

/// A DNS server on loopback that answers every A query with `OUTSIDE`
/// (and others with no records), standing in for the host's resolvers.
fn fake_upstream(seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            let q = &buf[..n];
            // The question: labels up to the root, then type and class.
            let mut i = 12;
            let mut name = Vec::new();
            while i < n && q[i] != 0 {
                let l = q[i] as usize;
                name.push(String::from_utf8_lossy(&q[i + 1..(i + 1 + l).min(n)]).into_owned());
                i += 1 + l;
            }
            let end = (i + 5).min(n);
            let qtype = u16::from_be_bytes([q[(i + 1).min(n - 1)], q[(i + 2).min(n - 1)]]);
            seen.lock().unwrap().push(name.join("."));
            let mut r = Vec::from(&q[..end]);
            r[2] = 0x81;
            r[3] = 0x80;
            let a = qtype == 1;
            r[6..8].copy_from_slice(&[0, u8::from(a)]);
            r[8..12].copy_from_slice(&[0, 0, 0, 0]);
            if a {
                r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                r.extend_from_slice(&OUTSIDE.octets());
            }
            let _ = sock.send_to(&r, from);
        }
    });
    addr
}

impl Setup {
    fn new() -> Setup {
        let (h, reg, image) = busybox_store();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let up = fake_upstream(seen.clone());
        std::fs::write(
            h.config_file(),
            format!("[network]\ndns_upstream = [\"{up}\"]\n"),
        )
        .unwrap();
        Setup {
            h,
            _reg: reg,
            image,
            upstream_seen: seen,
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        self.h.ok(args)
    }

    fn inspect(&self, name: &str) -> Value {
        serde_json::from_str::<Value>(&self.ok(&["inspect", name])).unwrap()[0].clone()
    }

    fn ip(&self, name: &str, net: &str) -> String {
        self.inspect(name)["NetworkSettings"]["Networks"][net]["IPAddress"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn network(&self, name: &str) -> Value {
        serde_json::from_str::<Value>(&self.ok(&["network", "inspect", name])).unwrap()[0].clone()
    }

    /// Runs `sh -c script` in a new container with `args`; its output.
    fn sh(&self, args: &[&str], script: &str) -> String {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[&self.image, "sh", "-c", script]);
        self.ok(&all)
    }

    /// Nothing of any container is left on the host's network side: no
    /// namespace files, no veth on any bridge of this store, no published
    /// port in its firewall table.
    fn assert_network_released(&self) {
        let netns = self.h.dir.path().join("run/netns");
        let left: Vec<_> = std::fs::read_dir(&netns)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "network namespaces left: {left:?}");
        let nets: Vec<String> = self
            .ok(&["network", "ls", "-q", "--no-trunc"])
            .lines()
            .map(String::from)
            .collect();
        let mut table = String::new();
        for id in nets {
            let n = self.network(&id);
            let bridge = n["Options"]["com.docker.network.bridge.name"]
                .as_str()
                .unwrap()
                .to_string();
            table = n["Options"]["hako.nftables.table"]
                .as_str()
                .unwrap()
                .to_string();
            // The kernel unplugs a removed namespace's veths in the
            // background, within moments.
            let ports = || -> Vec<_> {
                std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
                    .map(|d| d.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_default()
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while !ports().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(ports().is_empty(), "veths left on {bridge}: {:?}", ports());
            assert_eq!(n["Containers"], serde_json::json!({}), "{id}");
        }
        if !table.is_empty() {
            // A removed container's ports are taken out in the background.
            let listed = |map: &str| {
                let out = std::process::Command::new("nft")
                    .args(["list", "map", "ip", &table, map])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            for map in ["ports", "ports_ip"] {
                let deadline = Instant::now() + Duration::from_secs(10);
                while listed(map).contains("elements") && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let text = listed(map);
                assert!(!text.contains("elements"), "published ports left: {text}");
            }
        }
    }

    /// Removes the containers, then checks everything is released.
    fn finish(self) {
        for id in self.ok(&["ps", "-a", "-q", "--no-trunc"]).lines() {
            self.ok(&["rm", "-f", id]);
        }
        self.assert_network_released();
        assert_no_mounts_under(self.h.dir.path());
    }
}

/// GET `path` from `addr` with plain HTTP/1.0; the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

/// Retries `f` until it succeeds (a server in a new container takes a
/// moment to listen).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An IPv4 address of this host that is not loopback and not one of
/// hako's bridges (traffic to it stays on the host).
fn host_address() -> Option<Ipv4Addr> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let dev = f.get(1)?;
        if dev.starts_with("hk") || dev.starts_with("hako") {
            return None;
        }
        f.get(3)?.split('/').next()?.parse().ok()
    })
}

fn gateway_of(s: &Setup, net: &str) -> Ipv4Addr {
    s.network(net)["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Another host, as a network namespace of the test's own joined to this
/// one by a veth pair on a small subnet (traffic stays on this machine).
struct OutsideHost {
    name: String,
    veth: String,
}

impl OutsideHost {
    /// This host's address on the link, and the other host's.
    const HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 1);
    const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 2);

    fn new() -> OutsideHost {
        let tag = format!("{:x}", std::process::id());
        let o = OutsideHost {
            name: format!("hkt-out-{tag}"),
            veth: format!("hkto{tag}"),
        };
        let ip = |args: &[&str]| {
            let st = std::process::Command::new("ip")
                .args(args)
                .status()
                .unwrap();
            assert!(st.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &o.name]);
        ip(&[
            "link", "add", &o.veth, "type", "veth", "peer", "name", "eth0", "netns", &o.name,
        ]);
        ip(&["addr", "add", &format!("{}/30", Self::HOST), "dev", &o.veth]);
        ip(&["link", "set", &o.veth, "up"]);
        ip(&[
            "-n",
            &o.name,
            "addr",
            "add",
            &format!("{}/30", Self::PEER),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &o.name, "link", "set", "eth0", "up"]);
        ip(&["-n", &o.name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &o.name,
            "route",
            "add",
            "default",
            "via",
            &Self::HOST.to_string(),
        ]);
        o
    }

    /// Runs `f` on a thread inside the other host.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn host_port(s: &Setup, name: &str, port: &str) -> u16 {
    let out = s.ok(&["port", name, port]);
    out.trim().rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn bridge_network_publishes_ports() {
    let s = Setup::new();
    let web = s
        .ok(&[
            "run", "-d", "--name", "web", "-p", "80", &s.image, "httpd", "-f", "-p", "80", "-h",
            "/etc",
        ])
        .trim()
        .to_string();
    let short = &web[..12];
    let port = host_port(&s, "web", "80/tcp");
    assert!(
        s.ok(&["ps", "--format", "{{.Ports}}"])
            .contains(&format!("0.0.0.0:{port}->80/tcp")),
        "ps shows the port"
    );
    // From the host: loopback and its own address.
    let body = eventually("httpd on 127.0.0.1", || {
        http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "/hostname").ok()
    });
    assert_eq!(body.trim(), short);
    let mut addrs = vec![];
    if let Some(a) = host_address() {
        assert_eq!(
            http_get(SocketAddr::from((a, port)), "/hostname")
                .unwrap()
                .trim(),
            short,
            "through {a}"
        );
        addrs.push(a.to_string());
    }
    // From another container: the web container's address, and the
    // published port through the gateway (hairpin NAT).
    let web_ip = s.ip("web", "bridge");
    let gateway = s.network("bridge")["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap()
        .to_string();
    addrs.push(gateway);
    let mut script = format!("wget -qO- http://{web_ip}/hostname");
    for a in &addrs {
        script.push_str(&format!("; wget -qO- http://{a}:{port}/hostname"));
    }
    let out = s.sh(&[], &script);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![short; addrs.len() + 1]
    );
    // The container's own view: its address, the route out, /etc/hosts.
    let inside = s.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "ip -4 -o addr show eth0; ip route; cat /etc/hosts",
    ]);
    assert!(inside.contains(&format!("inet {web_ip}/")), "{inside}");
    assert!(inside.contains("default via"), "{inside}");
    assert!(inside.contains(&format!("{web_ip}\t{short}")), "{inside}");

    // Another container in web's network namespace reaches it on
    // loopback.
    let out = s.sh(
        &["--network", "container:web"],
        "wget -qO- http://127.0.0.1/hostname",
    );
    assert_eq!(out.trim(), short);
    // A fixed address and MAC.
    let gw: Ipv4Addr = gateway_of(&s, "bridge");
    let o = gw.octets();
    let fixed = Ipv4Addr::new(o[0], o[1], 200, 9);
    let out = s.sh(
        &[
            "--ip",
            &fixed.to_string(),
            "--mac-address",
            "02:42:00:aa:bb:cc",
        ],
        "ip -4 -o addr show eth0; cat /sys/class/net/eth0/address",
    );
    assert!(out.contains(&format!("inet {fixed}/")), "{out}");
    assert!(out.contains("02:42:00:aa:bb:cc"), "{out}");

    // From another host (a network namespace of this test's, on a veth
    // of its own): the published port, and the container's outbound
    // connections come from the host's address (NAT).
    let outside = OutsideHost::new();
    let body =
        outside.run(move || http_get(SocketAddr::from((OutsideHost::HOST, port)), "/hostname"));
    assert_eq!(body.unwrap().trim(), short, "from another host");
    let listener = outside.run(|| std::net::TcpListener::bind("0.0.0.0:0").unwrap());
    let lport = listener.local_addr().unwrap().port();
    let peer = std::thread::spawn(move || {
        let (mut c, peer) = listener.accept().unwrap();
        c.write_all(b"hi").unwrap();
        peer.ip().to_string()
    });
    let out = s.sh(&[], &format!("nc {} {lport} </dev/null", OutsideHost::PEER));
    assert_eq!(out, "hi");
    assert_eq!(
        peer.join().unwrap(),
        OutsideHost::HOST.to_string(),
        "masqueraded"
    );
    drop(outside);

    // A host port that is taken is refused, and the failed start keeps
    // nothing of its network.
    let err = s.h.run(&[
        "run",
        "-d",
        "--name",
        "clash",
        "-p",
        &format!("{port}:80"),
        &s.image,
        "sleep",
        "60",
    ]);
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    s.ok(&["rm", "-f", "clash"]);

    // UDP, on a loopback-only published port: an echo server made of the
    // host's python (its /usr bound in read-only).
    s.ok(&[
        "run", "-d", "--name", "udp", "-p", "127.0.0.1::9999/udp",
        "-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro",
        &s.image, "/usr/bin/python3", "-c",
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',9999))\nwhile True:\n d,a=s.recvfrom(100)\n s.sendto(d[::-1],a)",
    ]);
    let out = s.ok(&["port", "udp"]);
    assert!(out.starts_with("9999/udp -> 127.0.0.1:"), "{out}");
    let uport = host_port(&s, "udp", "9999/udp");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let reply = eventually("udp echo", || {
        client.send_to(b"hako", ("127.0.0.1", uport)).ok()?;
        let mut buf = [0u8; 16];
        let n = client.recv(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    });
    assert_eq!(reply, b"okah");

    s.ok(&["rm", "-f", "web", "udp"]);
    assert!(
        http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "/hostname").is_err(),
        "the port is closed after rm"
    );
    s.finish();
}

#[test]
fn user_networks_resolve_names_and_stay_apart() {
    let s = Setup::new();
    s.ok(&["network", "create", "app"]);
    s.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.231.7.0/24",
        "back",
    ]);
    let ls = s.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["app", "back", "bridge"]);
    let web = s
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "app",
            "--network-alias",
            "www",
            &s.image,
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/etc",
        ])
        .trim()
        .to_string();
    let short = web[..12].to_string();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "only-app",
        "--network",
        "app",
        &s.image,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    // By name, alias and short id; other names go to the upstream.
    let out = s.sh(
        &["--network", "app"],
        &format!(
            "wget -qO- http://web/hostname; wget -qO- http://www/hostname; wget -qO- http://{short}/hostname; nslookup outside.example | grep -A1 'Name:'"
        ),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], [short.as_str(); 3], "{out}");
    assert!(out.contains(&OUTSIDE.to_string()), "{out}");
    assert!(
        s.upstream_seen
            .lock()
            .unwrap()
            .iter()
            .any(|n| n.starts_with("outside.example")),
        "the upstream saw the query"
    );
    assert_eq!(
        s.ok(&["ps", "--filter", "network=app", "--format", "{{.Names}}"])
            .lines()
            .count(),
        2
    );
    // A rename renames it on the network too (the old name then goes to
    // the upstream, which answers with its own address).
    let app_ip = s.ip("only-app", "app");
    s.ok(&["rename", "only-app", "renamed"]);
    let out = s.sh(
        &["--network", "app"],
        &format!(
            "wget -qO- http://renamed/hostname >/dev/null && echo new; nslookup only-app 2>&1 | grep -q {app_ip} && echo old; true"
        ),
    );
    assert_eq!(out.trim(), "new", "{out}");
    s.ok(&["rename", "renamed", "only-app"]);
    // resolv.conf points at the network's gateway.
    let gw = s.network("app")["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap()
        .to_string();
    let resolv = s.ok(&["exec", "web", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains(&format!("nameserver {gw}")), "{resolv}");

    // A second network, joined live: `back` sees web by name, not only-app.
    s.ok(&["network", "connect", "--alias", "api", "back", "web"]);
    let nets = s.inspect("web")["NetworkSettings"]["Networks"].clone();
    assert!(nets["app"]["IPAddress"].is_string() && nets["back"]["IPAddress"].is_string());
    let only_app_ip = s.ip("only-app", "app");
    let out = s.sh(
        &["--network", "back"],
        &format!(
            "wget -qO- http://web/hostname; wget -qO- http://api/hostname; nslookup only-app >/dev/null 2>&1 && echo resolved; timeout 3 wget -qO- http://{only_app_ip}/hostname || echo unreachable; nslookup outside.example >/dev/null 2>&1 && echo forwarded; true"
        ),
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [short.as_str(), short.as_str(), "unreachable"],
        "{out}"
    );
    // web, on both, resolves names of both.
    let out = s.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "wget -qO- http://only-app/hostname >/dev/null && echo ok",
    ]);
    assert_eq!(out.trim(), "ok");

    // In use: refused. Disconnected and removed: released.
    let err = s.h.run(&["network", "rm", "back"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("web"));
    s.ok(&["network", "disconnect", "back", "web"]);
    let back = s.network("back");
    let bridge = back["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .unwrap()
        .to_string();
    s.ok(&["network", "rm", "back"]);
    assert!(!std::path::Path::new(&format!("/sys/class/net/{bridge}")).exists());
    s.ok(&["rm", "-f", "web", "only-app"]);
    s.assert_network_released();
    // The resolver goes with the last user network's last container.
    assert_eq!(
        s.ok(&["network", "prune", "-f"]).trim(),
        "Deleted Networks:\napp"
    );
    let dns_pid = std::fs::read_to_string(s.h.dir.path().join("run/dns/pid")).unwrap_or_default();
    if let Some(pid) = dns_pid.split_whitespace().next() {
        // Gone, or a zombie waiting for init to reap it.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        assert!(
            !stat.contains("(hako-dns)") || state == Some("Z"),
            "the resolver is still running: {stat}"
        );
    }
    s.finish();
}

/// `hako run` SIGKILLed in the middle of the network setup, and a monitor
/// SIGKILLed with its container: the next commands release everything.
#[test]
fn killed_hako_leaves_no_network_behind() {
    let s = Setup::new();
    s.ok(&["network", "create", "crashnet"]);
    for (i, point) in [
        "engine: addresses assigned",
        "engine: veths plugged",
        "engine: ports published",
        "engine: rootfs mounted, spec written",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("crash{i}");
        let out =
            s.h.cmd()
                .args([
                    "run",
                    "-d",
                    "--name",
                    &name,
                    "--network",
                    "crashnet",
                    "-p",
                    "80",
                    &s.image,
                    "sleep",
                    "60",
                ])
                .env("HAKO_RUNTIME_CRASH_AT", point)
                .output()
                .unwrap();
        assert_eq!(out.status.code(), None, "{point}: not killed");
        s.ok(&["rm", "-f", &name]);
        s.assert_network_released();
    }
    // The same address is handed out again: nothing leaked in IPAM.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "crashnet",
        "-p",
        "80",
        &s.image,
        "sleep",
        "60",
    ]);
    let first = s.ip("a", "crashnet");
    let monitor = s.inspect("a")["State"]["Pid"].as_i64().unwrap();
    // SIGKILL the container's init and its monitor.
    let mpid = std::fs::read_to_string(format!("/proc/{monitor}/stat"))
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse::<i32>()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(mpid), nix::sys::signal::SIGKILL).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(monitor).unwrap()),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{monitor}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let ps = s.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    assert!(ps.contains("a exited"), "{ps}");
    s.assert_network_released();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--network",
        "crashnet",
        &s.image,
        "sleep",
        "60",
    ]);
    assert_eq!(s.ip("b", "crashnet"), first);

    // A published port whose release never happened (its background
    // child killed) leads to an address no container holds: the next
    // publish of that host port takes it out instead of failing.
    let table = s.network("crashnet")["Options"]["hako.nftables.table"]
        .as_str()
        .unwrap()
        .to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let st = std::process::Command::new("nft")
        .args([
            "add",
            "element",
            "ip",
            &table,
            "ports",
            &format!("{{ tcp . {port} : 10.250.0.9 . 80 }}"),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    s.ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "-p",
        &format!("{port}:80"),
        &s.image,
        "sleep",
        "60",
    ]);
    assert_eq!(s.ok(&["port", "c", "80"]).trim(), format!("0.0.0.0:{port}"));
    // One held by a live container is not taken.
    let err = s.h.run(&[
        "run",
        "-d",
        "--name",
        "d",
        "-p",
        &format!("{port}:80"),
        &s.image,
        "sleep",
        "60",
    ]);
    assert!(!err.status.success());
    s.finish();
}

/// State roots of their own, making networks at the same moment, never
/// choose the same subnet (and none clashes with a route of the host).
#[test]
fn parallel_roots_choose_distinct_subnets() {
    ensure_monitor();
    let roots: Vec<Hako> = (0..4).map(|_| Hako::new()).collect();
    let subnets: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = roots
            .iter()
            .map(|h| {
                sc.spawn(move || {
                    h.ok(&["network", "create", "par"]);
                    let out = h.ok(&["network", "inspect", "par"]);
                    let v: Value = serde_json::from_str(&out).unwrap();
                    v[0]["IPAM"]["Config"][0]["Subnet"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = subnets.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), subnets.len(), "{subnets:?}");
    for h in &roots {
        h.ok(&["network", "rm", "par"]);
        h.ok(&["system", "reset", "-f"]);
    }
}
