//! The LAN capture (R29) in a real kernel (root, network namespaces):
//!
//! - A capture on `vB`; from the other end of the veth pair, devices announce themselves in ARP,
//!   neighbour discovery and DHCP among a broadcast storm and the socket's own address. The
//!   capture names exactly the devices, and the kernel's filter hands the agent no frame of the
//!   storm.
//! - The real agent in namespace b, its WAN `vB`, a second veth pair its LAN (found by default):
//!   devices announced on the LAN are today's devices in `status`, those on the WAN are not.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::fd::AsFd;
use std::process::Stdio;

use support::lan::{
    add_lan, agent_config, agent_status, arp, devices_today, ip, neighbour_solicitation, run_agent, run_agent_on,
    sysctl, udp_broadcast,
};
use support::namespaces::Namespaces;
use tally_agent::clock::ScaledClock;
use tally_agent::lan::{Capture, Via};
use tally_common::lan::Mac;
use tally_testkit::skip;

/// The instant the end-to-end test's agent and collector start their clocks at.
const MID_MONTH: &str = "2026-11-16T12:00:00Z";

/// Sends `frames` out of `interface` in namespace a, in order (Python's packet socket).
fn send(namespaces: &Namespaces, interface: &str, frames: &[Vec<u8>]) {
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
                  s.bind((sys.argv[1], 0))\n\
                  for line in sys.stdin.read().split():\n    s.send(bytes.fromhex(line))\n";
    let mut python = namespaces.exec(&namespaces.a, "python3");
    let mut child = python.args(["-c", script, interface]).stdin(Stdio::piped()).spawn().unwrap();
    let hex: String = frames.iter().map(|f| f.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n").collect();
    child.stdin.take().unwrap().write_all(hex.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn the_capture_names_the_devices_and_the_kernel_keeps_the_rest() {
    let namespaces = match Namespaces::create("lan") {
        Ok(namespaces) => namespaces,
        Err(why) => return skip!(&why),
    };
    // The sending side says nothing of its own (no IPv6 router solicitations).
    let sysctl = namespaces.exec(&namespaces.a, "sysctl").args(["-qw", "net.ipv6.conf.all.disable_ipv6=1"]).status();
    assert!(sysctl.unwrap().success());
    let link: serde_json::Value =
        serde_json::from_str(&ip(&["-n", &namespaces.b, "-j", "link", "show", "vB"])).unwrap();
    let ifindex = link[0]["ifindex"].as_u64().unwrap() as u32;
    let own: Mac = link[0]["address"].as_str().unwrap().parse().unwrap();

    // The capture opens inside namespace b, on a thread that moved there.
    let netns = std::fs::File::open(format!("/run/netns/{}", namespaces.b)).unwrap();
    let capture = std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(netns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .unwrap();
        Capture::open("vB", ifindex).unwrap()
    })
    .join()
    .unwrap();

    let device = |n: u8| [0x02 * (n % 2), 0x1b, 0x21, 0, 0, n];
    let sentinel = [0x00, 0x1b, 0x21, 0xff, 0xff, 0xff];
    let mut frames = Vec::new();
    let mut expected = BTreeSet::new();
    for n in 1..=30u8 {
        let frame = match n % 3 {
            0 => arp(device(n)),
            1 => neighbour_solicitation(device(n)),
            _ => udp_broadcast(device(n), 67),
        };
        frames.push(frame);
        expected.insert(Mac(device(n)));
    }
    // Seen again: still one device each.
    frames.push(arp(device(1)));
    // The socket's own address, a group address, and a storm of broadcasts that are not DHCP.
    frames.push(arp(own.0));
    frames.push(arp([0x01, 0, 0x5e, 0, 0, 9]));
    let storm: Vec<Vec<u8>> = (0..2_000u16).map(|i| udp_broadcast(device((i % 250) as u8 + 1), 9)).collect();
    frames.extend(storm);
    frames.push(arp(sentinel));
    send(&namespaces, "vA", &frames);

    // Read on a thread of its own, as the agent does; a frame that never comes fails the test
    // instead of hanging it.
    let (found, sightings) = std::sync::mpsc::channel();
    let capture = std::sync::Arc::new(capture);
    let reader = capture.clone();
    std::thread::spawn(move || {
        while let Ok(sighting) = reader.next(&[own]) {
            if found.send(sighting).is_err() {
                break;
            }
        }
    });
    let (mut seen, mut count) = (BTreeSet::new(), 0);
    loop {
        let (mac, via) = sightings.recv_timeout(std::time::Duration::from_secs(10)).expect("the sentinel within 10 s");
        count += 1;
        if mac == Mac(sentinel) {
            assert_eq!(via, Via::Arp);
            break;
        }
        seen.insert(mac);
    }
    assert_eq!(seen, expected);
    assert_eq!(count, 32, "30 devices, one twice, the sentinel");
    // The kernel handed over the 31 frames, the sentinel, the own address and the group address
    // (ARP all three, which only the agent can judge), and not one of the 2,000 others.
    assert_eq!(capture.frames_read(), 34);
}

#[test]
fn the_agent_counts_todays_devices_on_its_lan_and_not_on_its_wan() {
    let namespaces = match Namespaces::create("lanrun") {
        Ok(namespaces) => namespaces,
        Err(why) => return skip!(&why),
    };
    add_lan(&namespaces);
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), "");
    let mut agent = run_agent(&namespaces, &config);
    let watching = agent.until("watching the LAN for devices");
    assert!(watching.contains("interfaces=lanB"), "{watching}");

    let device = |n: u8| [0x02 * (n % 2), 0x1b, 0x21, 0, 1, n];
    let lan: Vec<Vec<u8>> =
        (1..=12u8).map(|n| if n % 2 == 0 { arp(device(n)) } else { udp_broadcast(device(n), 67) }).collect();
    // The same kind of frames from other devices on the WAN side: not the LAN's.
    let wan: Vec<Vec<u8>> = (100..110u8).map(|n| arp(device(n))).collect();
    send(&namespaces, "vA", &wan);
    send(&namespaces, "lanA", &lan);

    let shown = devices_today(&namespaces, &config, 12);
    assert_eq!(shown["lan"]["devices_today"], 12, "{shown}");
    assert_eq!(shown["lan"]["private_addresses_today"], 6, "{shown}");
    assert_eq!(shown["lan"]["interfaces"], serde_json::json!(["lanB"]));
    agent.stop();
}

/// POSTs `body` to the collector's API at `url` from inside namespace `ns` (the collector listens
/// on that namespace's loopback), with the operator's token.
fn post_from(namespaces: &Namespaces, ns: &str, url: &str, token: &str, body: &serde_json::Value) -> String {
    let script = "import sys, urllib.request\n\
                  request = urllib.request.Request(sys.argv[1], data=sys.stdin.buffer.read(), method='POST',\n\
                      headers={'Authorization': 'Bearer ' + sys.argv[2], 'Content-Type': 'application/json'})\n\
                  print(urllib.request.urlopen(request).read().decode())\n";
    let mut child = namespaces
        .exec(ns, "python3")
        .args(["-c", script, url, token])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "POST {url}");
    String::from_utf8(out.stdout).unwrap()
}

/// Sends each frame out of its own interface in namespace `ns`: a device's frames leave with its
/// own hardware address.
fn send_each(namespaces: &Namespaces, ns: &str, frames: &[(String, Vec<u8>)]) {
    let script = "import socket, sys\n\
                  sockets = {}\n\
                  for line in sys.stdin.read().splitlines():\n    \
                      interface, frame = line.split()\n    \
                      if interface not in sockets:\n        \
                          sockets[interface] = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n        \
                          sockets[interface].bind((interface, 0))\n    \
                      sockets[interface].send(bytes.fromhex(frame))\n";
    let mut child = namespaces.exec(ns, "python3").args(["-c", script]).stdin(Stdio::piped()).spawn().unwrap();
    let lines: String = frames
        .iter()
        .map(|(interface, f)| format!("{interface} {}\n", f.iter().map(|b| format!("{b:02x}")).collect::<String>()))
        .collect();
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

/// The whole way of R29 with a real agent and collector: 50 devices, each a macvlan interface
/// with its own address on the LAN segment of namespace a, announce themselves in ARP,
/// neighbour discovery and DHCP discover, among a broadcast storm and the socket's own
/// addresses. The agent keeps them across a restart, ships them over protocol 4, and the
/// month's device meter counts the 50 once each, with the devices posted through the API (three
/// of them the same as LAN devices, written another way) counted once.
#[test]
fn fifty_devices_on_the_lan_reach_the_device_meter_once_with_the_apis() {
    if support::collector::binary().is_none() {
        return skip!("the collector binary is not built; run `cargo test --workspace`");
    };
    let namespaces = match Namespaces::create("lanmeter") {
        Ok(namespaces) => namespaces,
        Err(why) => return skip!(&why),
    };
    // The agent and the collector both run on a clock started mid-month, so every sighting
    // falls in one month whatever today's date.
    let now: chrono::DateTime<chrono::Utc> = MID_MONTH.parse().unwrap();
    let month = tally_common::time::Month::containing(now.date_naive()).to_string();
    let (a, b) = (namespaces.a.as_str(), namespaces.b.as_str());
    add_lan(&namespaces);
    // The devices: macvlan interfaces on the LAN segment, each with its own address; even ones
    // with a locally administered (private) address.
    let device = |n: u8| [if n.is_multiple_of(2) { 0x02 } else { 0x00 }, 0x1b, 0x21, 0, 2, n];
    for n in 1..=50u8 {
        let name = format!("dev{n}");
        let mac = Mac(device(n)).to_string();
        ip(&["-n", a, "link", "add", &name, "link", "lanA", "address", &mac, "type", "macvlan", "mode", "bridge"]);
        ip(&["-n", a, "link", "set", &name, "up"]);
    }

    let dir = tempfile::tempdir().unwrap();
    let token = "lan-meter-operator-token-0123456789abcdef";
    let mut collector = support::collector::Collector::new()
        .at(MID_MONTH)
        .quic_on("192.0.2.1", &format!("log = \"info\"\noperator_token = \"{token}\""));
    support::collector::add_acme_hq(&collector);
    collector.namespace = Some(a.to_owned());
    let server = collector.serve();
    let http = collector.http_address().to_string();

    let config = agent_config(dir.path(), "");
    let enrolled = namespaces
        .exec(b, env!("CARGO_BIN_EXE_tally-agent"))
        .args([
            "enroll",
            "--collector",
            &collector.quic.to_string(),
            "--token",
            &support::collector::enroll_token(&collector),
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(enrolled.status.success(), "{}", String::from_utf8_lossy(&enrolled.stderr));
    let agent_clock = format!("{}:{}:1", now.timestamp(), ScaledClock::now_anchor().as_nanos());
    let mut agent = run_agent_on(&namespaces, &config, &agent_clock);
    agent.until("watching the LAN for devices");
    agent.until("connected to the collector");

    let own: Vec<Mac> = ["vB", "lanB"]
        .iter()
        .map(|i| {
            let link: serde_json::Value = serde_json::from_str(&ip(&["-n", b, "-j", "link", "show", i])).unwrap();
            link[0]["address"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    let mut frames: Vec<(String, Vec<u8>)> = (1..=50u8)
        .map(|n| {
            let frame = match n % 3 {
                0 => arp(device(n)),
                1 => neighbour_solicitation(device(n)),
                _ => udp_broadcast(device(n), 67),
            };
            (format!("dev{n}"), frame)
        })
        .collect();
    // The socket's own addresses, and a storm of broadcasts that are not DHCP from devices that
    // say nothing else: none of them a device.
    frames.extend(own.iter().map(|mac| ("lanA".to_owned(), arp(mac.0))));
    frames.extend((0..2_000u16).map(|i| ("lanA".to_owned(), udp_broadcast([0, 0x1b, 0x21, 9, 9, i as u8], 9))));
    send_each(&namespaces, a, &frames);

    let shown = devices_today(&namespaces, &config, 50);
    assert_eq!(shown["lan"]["devices_today"], 50, "{shown}");
    // Stopped before the minute's save: the day is saved at the stop, kept, and shipped by the
    // next run.
    agent.stop();
    let mut agent = run_agent_on(&namespaces, &config, &agent_clock);
    agent.until("connected to the collector");
    let shown = agent_status(&namespaces, &config);
    assert_eq!(shown["lan"]["devices_today"], 50, "today's devices kept across the restart");

    let api = |id: &str, device: &str| {
        serde_json::json!({"id": id, "type": "device_sighting", "account": "acme", "time": tally_common::time::rfc3339(now),
                           "device": device, "source": "inline", "is_socket": false})
    };
    let written_otherwise = |n: u8| Mac(device(n)).to_string().to_uppercase().replace(':', "-");
    let events = serde_json::json!({"events": [
        api("e1", &written_otherwise(1)), api("e2", &written_otherwise(2)), api("e3", &written_otherwise(3)),
        api("e4", "laptop-without-lan"), api("e5", "00:1b:21:00:03:01"),
    ]});
    let answer = post_from(&namespaces, a, &format!("http://{http}/v1/usage/events"), token, &events);
    assert!(answer.contains("\"accepted\":5"), "{answer}");

    let meter = || {
        let report: serde_json::Value = serde_json::from_str(&collector.ok(&[
            "report",
            "--account",
            "acme",
            "--month",
            &month,
            "--format",
            "json",
        ]))
        .unwrap();
        report["meters"].as_array().unwrap().iter().find(|m| m["license"] == "devices").cloned()
    };
    // Shipped once the restarted agent is connected.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !meter().is_some_and(|m| m["by_source"]["lan_discovery"] == 50) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let meter = meter().expect("a device meter");
    assert_eq!(meter["by_source"]["lan_discovery"], 50, "{meter}");
    assert_eq!(meter["by_source"]["inline"], 5, "{meter}");
    assert_eq!(meter["measured"], 52, "50 on the LAN, 2 more through the API: {meter}");
    assert_eq!(meter["locally_administered"], 25, "{meter}");
    agent.stop();
    server.stop();
}

/// Without CAP_NET_RAW (dropped from the bounding set, as a unit without it would), one ERROR
/// says why no device is counted, and the agent measures on.
#[test]
fn without_cap_net_raw_one_error_and_measuring_goes_on() {
    let namespaces = match Namespaces::create("lancap") {
        Ok(namespaces) => namespaces,
        Err(why) => return skip!(&why),
    };
    add_lan(&namespaces);
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), "");
    let mut agent = support::collector::Logged::spawn({
        let mut cmd = namespaces.exec(&namespaces.b, "setpriv");
        cmd.args(["--bounding-set", "-net_raw", env!("CARGO_BIN_EXE_tally-agent"), "run", "--config"]).arg(&config);
        cmd
    });
    let error = agent.until("LAN device discovery needs CAP_NET_RAW");
    assert!(error.contains("ERROR"), "{error}");
    // Two ticks make the first sample.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while agent_status(&namespaces, &config)["last_sample"].is_null() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let shown = agent_status(&namespaces, &config);
    assert!(!shown["last_sample"].is_null(), "no sample: {shown}");
    assert!(shown["lan"].is_null(), "no LAN watched: {shown}");
    let log = agent.stop();
    assert_eq!(log.matches("CAP_NET_RAW").count(), 1, "{log}");
}

/// `lan_arp_sweep_minutes` (R29): devices that never speak first (IPv4 only, no announcement)
/// answer the kernel's ARP requests of the sweep, and are counted.
#[test]
fn an_arp_sweep_finds_the_devices_that_say_nothing() {
    let namespaces = match Namespaces::create("lansweep") {
        Ok(namespaces) => namespaces,
        Err(why) => return skip!(&why),
    };
    let (a, b) = (namespaces.a.as_str(), namespaces.b.as_str());
    add_lan(&namespaces);
    sysctl(&namespaces, a, &["net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]);
    ip(&["-n", b, "addr", "add", "198.51.100.1/24", "dev", "lanB"]);
    // Ten quiet devices: each answers ARP for its own address only (arp_ignore), and says nothing first.
    for n in 1..=10u8 {
        let name = format!("quiet{n}");
        let mac = Mac([0x00, 0x1b, 0x21, 0, 3, n]).to_string();
        ip(&["-n", a, "link", "add", &name, "link", "lanA", "address", &mac, "type", "macvlan", "mode", "bridge"]);
        ip(&["-n", a, "addr", "add", &format!("198.51.100.{}/24", 10 + n), "dev", &name]);
        ip(&["-n", a, "link", "set", &name, "up"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), "lan_arp_sweep_minutes = 60\nlog = \"info,tally_agent::lan=debug\"");
    let mut agent = run_agent(&namespaces, &config);
    let swept = agent.until("LAN swept");
    assert!(swept.contains("interface=lanB") && swept.contains("addresses=253"), "{swept}");
    let shown = devices_today(&namespaces, &config, 10);
    assert_eq!(shown["lan"]["devices_today"], 10, "{shown}");
    agent.stop();
}
