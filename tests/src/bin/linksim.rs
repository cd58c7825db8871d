//! A switch in user space whose ports delay (and may lose) what they carry: a stand-in for
//! a bridge with `tc netem` on every link, for kernels built without netem.
//!
//! `linksim --delay-us 1000 [--loss-percent P] PORT...` creates one TAP device per port name,
//! prints `ready` once they exist, and forwards Ethernet frames between them (learning which
//! MAC address is behind which port, flooding the rest) until it is killed. Each frame is
//! held `delay-us` microseconds before it leaves, as a link of that latency would. The
//! caller moves the devices into the hosts' namespaces (`ip link set PORT netns NS`) and
//! addresses them there; the file descriptors stay the switch's.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tun_tap::{Iface, Mode};

/// A frame on its way out of a port, and when it may leave.
type Queue = Arc<(Mutex<VecDeque<(Instant, Vec<u8>)>>, Condvar)>;

/// Frames queued for one port beyond this are dropped, as a full link's queue does.
const QUEUE_MAX: usize = 10_000;

fn main() {
    let mut delay = Duration::from_micros(1000);
    let mut loss = 0.0f64;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--delay-us" => delay = Duration::from_micros(parse(&value())),
            "--loss-percent" => loss = parse::<f64>(&value()) / 100.0,
            name if !name.starts_with('-') && name.len() < 16 => names.push(name.to_owned()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if names.len() < 2 {
        usage("give at least two ports");
    }
    let taps: Vec<Arc<Iface>> = names.iter().map(|name| Arc::new(open_tap(name))).collect();
    println!("ready");
    std::io::stdout().flush().ok();

    let queues: Vec<Queue> = taps
        .iter()
        .map(|_| Arc::new((Mutex::new(VecDeque::new()), Condvar::new())))
        .collect();
    let macs: Arc<Mutex<HashMap<[u8; 6], usize>>> = Arc::default();
    let mut threads = Vec::new();
    for (port, tap) in taps.into_iter().enumerate() {
        let writer = tap.clone();
        let queue = queues[port].clone();
        threads.push(std::thread::spawn(move || loop {
            let (frame, due) = {
                let (lock, ready) = &*queue;
                let mut frames = lock.lock().expect("queue");
                while frames.is_empty() {
                    frames = ready.wait(frames).expect("queue");
                }
                let (due, frame) = frames.pop_front().expect("a frame");
                (frame, due)
            };
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // A port whose device is down refuses frames: they are lost, as on a cable.
            let _ = writer.send(&frame);
        }));
        let queues = queues.clone();
        let macs = macs.clone();
        let reader = tap;
        threads.push(std::thread::spawn(move || {
            let mut random = 0x9e37_79b9_7f4a_7c15u64 ^ (port as u64 + 1);
            let mut buffer = vec![0u8; 65_536];
            loop {
                let n = match reader.recv(&mut buffer) {
                    Ok(n) if n >= 14 => n,
                    Ok(_) => continue,
                    Err(error) if error.raw_os_error() == Some(libc::EIO) => {
                        // The device is down (its host's link cut): wait for it to return.
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    Err(error) => panic!("reading port {port}: {error}"),
                };
                let frame = &buffer[..n];
                let destination: [u8; 6] = frame[0..6].try_into().expect("six bytes");
                let source: [u8; 6] = frame[6..12].try_into().expect("six bytes");
                let target = {
                    let mut macs = macs.lock().expect("macs");
                    macs.insert(source, port);
                    macs.get(&destination).copied()
                };
                let due = Instant::now() + delay;
                let ports: Vec<usize> = match target {
                    Some(to) if destination[0] & 1 == 0 => vec![to],
                    _ => (0..queues.len()).filter(|p| *p != port).collect(),
                };
                for to in ports {
                    if to == port {
                        continue;
                    }
                    if loss > 0.0 {
                        random ^= random << 13;
                        random ^= random >> 7;
                        random ^= random << 17;
                        if (random >> 11) as f64 / (1u64 << 53) as f64 <= loss {
                            continue;
                        }
                    }
                    let (lock, ready) = &*queues[to];
                    let mut frames = lock.lock().expect("queue");
                    if frames.len() < QUEUE_MAX {
                        frames.push_back((due, frame.to_vec()));
                        ready.notify_one();
                    }
                }
            }
        }));
    }
    for thread in threads {
        let _ = thread.join();
    }
}

fn parse<T: std::str::FromStr>(text: &str) -> T {
    text.parse()
        .unwrap_or_else(|_| usage(&format!("{text:?} is not a number")))
}

fn usage(problem: &str) -> ! {
    eprintln!("linksim: {problem}\nusage: linksim [--delay-us N] [--loss-percent P] PORT PORT...");
    std::process::exit(2);
}

/// Creates the TAP device `name` (Ethernet frames, no packet information header).
fn open_tap(name: &str) -> Iface {
    Iface::without_packet_info(name, Mode::Tap)
        .unwrap_or_else(|error| panic!("creating TAP {name}: {error}"))
}
