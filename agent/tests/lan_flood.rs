//! A flood on the LAN never delays the meter (R29): 10,000 frames a second for 60 s, every one
//! of them a device's ARP (the worst case: the kernel's filter keeps them all, and the day fills
//! up to `max_lan_devices_per_day`), while the real agent measures its WAN. Every 5-second
//! tick of the flood makes its sample, none is missing, and none is later than 100 ms. sled's I/O
//! pool sleeps with its long timer slack meanwhile, and the agent's other threads with their own.
//!
//! Its own test binary, so that it runs alone: other tests' load would be measured with it.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use chrono::{DateTime, TimeDelta, Utc};
use support::lan::{add_lan, agent_config, agent_status, arp, run_agent};
use support::namespaces::Namespaces;
use tally_agent::store::POOL_TIMER_SLACK;
use tally_testkit::skip;

/// Frames a second, and for how long.
const RATE: u32 = 10_000;
const SECONDS: u32 = 60;
/// Devices the flood cycles through: more than a day keeps.
const DEVICES: u32 = 5_000;

#[test]
fn ten_thousand_frames_a_second_on_the_lan_delay_no_tick() {
    let namespaces = match Namespaces::create("flood") {
        Ok(namespaces) => namespaces,
        Err(why) => return skip!(&why),
    };
    add_lan(&namespaces);
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), "log = \"info,tally_agent::measure=debug\"");
    let mut agent = run_agent(&namespaces, &config);
    agent.until("watching the LAN for devices");
    // The first tick only reads the counters; the flood starts once the ticks make samples.
    agent.until(" sample ");
    let threads = agent_threads(&config);
    let (pool, own): (Vec<_>, Vec<_>) = threads.iter().partition(|(name, _)| name.starts_with("sled-io"));
    // sled's 7 lasting pool threads are the first it makes (`sled-io-0` to `-6`), at the store's
    // opening; threads it adds under load would take the slack of the thread that asked.
    let lasting: Vec<_> = pool.iter().filter(|(name, _)| name.len() == "sled-io-0".len()).collect();
    assert_eq!(lasting.len(), 7, "{threads:?}");
    assert!(lasting.iter().all(|(_, slack)| *slack == POOL_TIMER_SLACK.get()), "{threads:?}");
    assert!(!own.is_empty() && own.iter().all(|(_, slack)| *slack < POOL_TIMER_SLACK.get()), "{threads:?}");

    let frames: String = (0..DEVICES)
        .map(|n| {
            let [_, _, x, y] = n.to_be_bytes();
            arp([0x02, 0x1b, 0x21, 7, x, y]).iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n"
        })
        .collect();
    // Bursts of a hundredth of a second's frames, each at its time.
    let script = format!(
        "import socket, sys, time\n\
         frames = [bytes.fromhex(l) for l in sys.stdin.read().split()]\n\
         s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
         s.bind(('lanA', 0))\n\
         burst, start, sent = {RATE} // 100, time.monotonic(), 0\n\
         for slot in range({SECONDS} * 100):\n    \
             for i in range(burst):\n        \
                 s.send(frames[sent % len(frames)])\n        \
                 sent += 1\n    \
             pause = start + (slot + 1) / 100 - time.monotonic()\n    \
             if pause > 0:\n        \
                 time.sleep(pause)\n\
         print(sent, time.monotonic() - start)\n"
    );
    let flood_start = Utc::now();
    let mut flood = namespaces
        .exec(&namespaces.a, "python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    flood.stdin.take().unwrap().write_all(frames.as_bytes()).unwrap();
    let out = flood.wait_with_output().unwrap();
    let flood_end = Utc::now();
    assert!(out.status.success());
    let report = String::from_utf8(out.stdout).unwrap();
    let (sent, took): (u64, f64) = {
        let mut words = report.split_whitespace();
        (words.next().unwrap().parse().unwrap(), words.next().unwrap().parse().unwrap())
    };
    println!("{sent} frames in {took:.1} s");
    assert_eq!(sent, u64::from(RATE * SECONDS));
    assert!(took < f64::from(SECONDS) * 1.1, "the flood ran slow: {took} s, not {RATE} frames a second");

    let status = agent_status(&namespaces, &config);
    assert_eq!(status["lan"]["devices_today"], 4_096, "the day is full: {status}");
    assert!(status["lan"]["over_limit_today"].as_u64().unwrap() > 0, "{status}");
    let log = agent.stop();

    // Each sample's log line: when it was written, and the tick that made it (its interval's
    // end, 5 s after its start).
    let ticks: Vec<(DateTime<Utc>, DateTime<Utc>)> = log
        .lines()
        .filter(|l| l.contains(" sample "))
        .map(|l| {
            let logged: DateTime<Utc> = l.split_whitespace().next().unwrap().parse().unwrap();
            let start = l.split("start=").nth(1).unwrap().split_whitespace().next().unwrap();
            (logged, start.parse::<DateTime<Utc>>().unwrap() + TimeDelta::seconds(5))
        })
        .filter(|(_, tick)| *tick > flood_start && *tick <= flood_end)
        .collect();
    let expected = (flood_end - flood_start).num_seconds() / 5;
    assert!(ticks.len() as i64 >= expected, "{} ticks during the flood, {expected} expected:\n{log}", ticks.len());
    for pair in ticks.windows(2) {
        assert_eq!(pair[1].1 - pair[0].1, TimeDelta::seconds(5), "a tick is missing: {pair:?}");
    }
    let latest = ticks.iter().map(|(logged, tick)| *logged - *tick).max().unwrap();
    println!("{} ticks during the flood, the latest {} ms after its time", ticks.len(), latest.num_milliseconds());
    assert!(latest <= TimeDelta::milliseconds(100), "a tick {} ms late", latest.num_milliseconds());
}

/// The threads of the agent running with `config` (found by its command line): each one's name
/// and timer slack in nanoseconds.
fn agent_threads(config: &Path) -> Vec<(String, u64)> {
    let config = config.to_str().unwrap();
    let agent = std::fs::read_dir("/proc")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|process| {
            let command = std::fs::read(process.join("cmdline")).unwrap_or_default();
            let words: Vec<&[u8]> = command.split(|b| *b == 0).collect();
            words.first().is_some_and(|program| program.ends_with(b"tally-agent")) && words.contains(&config.as_bytes())
        })
        .expect("the agent's process");
    let read = |path: PathBuf| std::fs::read_to_string(path).unwrap().trim().to_owned();
    std::fs::read_dir(agent.join("task"))
        .unwrap()
        .map(|task| task.unwrap().path())
        // A thread's slack is in `/proc/TID/`, not under `task/`.
        .map(|task| {
            (
                read(task.join("comm")),
                read(Path::new("/proc").join(task.file_name().unwrap()).join("timerslack_ns")).parse().unwrap(),
            )
        })
        .collect()
}
