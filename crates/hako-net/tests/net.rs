//! hako-net on the real kernel: a network, two namespaces plugged into it,
//! traffic between them, a published port reached from the host, and
//! nothing left behind.
#![allow(clippy::unwrap_used)]

use hako_net::{Endpoint, Firewall, Netlink, Network, PortMapping};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;

fn unique() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:06x}",
        (t ^ std::process::id().rotate_left(20)) & 0xff_ffff
    )
}

/// Runs `f` on a thread inside the network namespace at `ns`.
fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(ns).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn table_listed(table: &str) -> bool {
    std::process::Command::new("nft")
        .args(["list", "table", "ip", table])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn network_namespaces_talk_and_ports_publish() {
    let u = unique();
    let dir = tempfile::tempdir().unwrap();
    let table = format!("hako-test-{u}");
    let mut fw = Firewall::open(&table).unwrap();
    let mut host = Netlink::open().unwrap();
    let routes = host.routes().unwrap();
    let subnet = hako_net::choose_subnet(&routes, &[]).unwrap();
    let net = Network {
        name: format!("t{u}"),
        id: u.clone(),
        bridge: format!("hkt{u}"),
        subnet,
        gateway: subnet.hosts().next().unwrap(),
        internal: false,
        dns: false,
        mtu: 0,
        labels: Default::default(),
        created: String::new(),
    };
    hako_net::ensure_network(&mut fw, &mut host, &net).unwrap();
    // Again: harmless.
    hako_net::ensure_network(&mut fw, &mut host, &net).unwrap();

    let mut endpoints = Vec::new();
    let mut namespaces = Vec::new();
    let mut used = Vec::new();
    for i in 0..2 {
        let ns = dir.path().join(format!("ns{i}"));
        let mut inside = hako_net::netns::create(&ns).unwrap();
        assert!(hako_net::netns::exists(&ns));
        let ip = hako_net::allocate_ip(&net, &used, None).unwrap();
        used.push(ip);
        let ep = Endpoint {
            network: net.name.clone(),
            ip,
            mac: hako_net::mac_for(ip),
            ifname: "eth0".into(),
            host_veth: hako_net::veth_name(&format!("c{i}{u}"), &net.id),
            aliases: vec![],
        };
        hako_net::attach(&mut host, &mut inside, &ns, &net, &ep, true).unwrap();
        endpoints.push(ep);
        namespaces.push(ns);
    }

    // A server in the second namespace, reached from the first by address.
    let ip1 = endpoints[1].ip;
    let server = in_netns(&namespaces[1], || TcpListener::bind("0.0.0.0:0").unwrap());
    let port = server.local_addr().unwrap().port();
    let serve = std::thread::spawn(move || {
        for _ in 0..3 {
            let (mut s, _) = server.accept().unwrap();
            s.write_all(b"hello").unwrap();
        }
    });
    let got = in_netns(&namespaces[0], move || {
        let mut s = TcpStream::connect((ip1, port)).unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        buf
    });
    assert_eq!(got, "hello");

    // Published on the host: reached on 127.0.0.1 and on the gateway.
    let host_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mapping = PortMapping {
        host_ip: None,
        host_port,
        container_port: port,
        range: 1,
        protocol: hako_net::Protocol::Tcp,
    };
    hako_net::firewall::add_ports(&table, ip1, std::slice::from_ref(&mapping)).unwrap();
    // The same host port again is refused.
    assert!(matches!(
        hako_net::firewall::add_ports(&table, endpoints[0].ip, std::slice::from_ref(&mapping)),
        Err(hako_net::Error::PortInUse(_))
    ));
    for addr in [Ipv4Addr::LOCALHOST, net.gateway] {
        let mut s = TcpStream::connect((addr, host_port)).unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "hello", "through {addr}:{host_port}");
    }
    serve.join().unwrap();

    // UDP through a published port.
    let udp = in_netns(&namespaces[1], || UdpSocket::bind("0.0.0.0:0").unwrap());
    let uport = udp.local_addr().unwrap().port();
    let uhost = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let umap = PortMapping {
        host_ip: Some(Ipv4Addr::LOCALHOST),
        host_port: uhost,
        container_port: uport,
        range: 1,
        protocol: hako_net::Protocol::Udp,
    };
    hako_net::firewall::add_ports(&table, ip1, std::slice::from_ref(&umap)).unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = udp.recv_from(&mut buf).unwrap();
        udp.send_to(&buf[..n], from).unwrap();
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    client.send_to(b"ping", ("127.0.0.1", uhost)).unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    echo.join().unwrap();

    // Everything goes.
    hako_net::firewall::remove_ports(&table, &[mapping, umap]);
    for (ep, ns) in endpoints.iter().zip(&namespaces) {
        hako_net::detach(&mut host, ep).unwrap();
        hako_net::netns::remove(ns);
        assert!(host.link_index(&ep.host_veth).unwrap().is_none());
        assert!(!ns.exists());
    }
    hako_net::remove_network(&mut fw, &mut host, &net).unwrap();
    assert!(host.link_index(&net.bridge).unwrap().is_none());
    fw.delete_table();
    assert!(!table_listed(&table));
}
